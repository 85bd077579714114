package s3server_test

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"hash/crc64"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/modelfs/modelfs/tests/s3server"
)

// Like S3, every object keeps a full-object checksum: CRC64NVME unless the
// uploader asked for another, returned by HEAD and GET when asked.
func TestStoredChecksums(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	data := randomBytes(3<<20+17, 7)
	crc64nvme := binary.BigEndian.AppendUint64(nil, crc64.Checksum(data, crc64.MakeTable(0x9a6c9329ac4bc9b5)))
	sha := sha256.Sum256(data)
	s1 := sha1.Sum(data)
	want := map[string][]byte{
		"":          crc64nvme,
		"CRC64NVME": crc64nvme,
		"CRC32C":    binary.BigEndian.AppendUint32(nil, crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))),
		"CRC32":     binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(data)),
		"SHA1":      s1[:],
		"SHA256":    sha[:],
	}
	ctx := context.Background()
	for algo, sum := range want {
		key := "obj-" + algo
		if _, err := srv.PutObjectWith(bucket, key, data, s3server.PutOptions{Checksum: algo}); err != nil {
			t.Fatal(err)
		}
		out, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{
			"CRC64NVME": aws.ToString(out.ChecksumCRC64NVME), "CRC32C": aws.ToString(out.ChecksumCRC32C),
			"CRC32": aws.ToString(out.ChecksumCRC32), "SHA1": aws.ToString(out.ChecksumSHA1), "SHA256": aws.ToString(out.ChecksumSHA256),
		}
		name := algo
		if name == "" {
			name = "CRC64NVME"
		}
		if got[name] != base64.StdEncoding.EncodeToString(sum) || out.ChecksumType != types.ChecksumTypeFullObject {
			t.Errorf("put with %q: HEAD gives %v (%s), want %s %x", algo, got, out.ChecksumType, name, sum)
		}
	}

	// No checksum at all, and SSE-KMS: no checksum header, no MD5 ETag.
	if _, err := srv.PutObjectWith(bucket, "bare", data, s3server.PutOptions{NoChecksum: true, SSEKMS: true}); err != nil {
		t.Fatal(err)
	}
	out, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("bare"), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	if out.ChecksumCRC64NVME != nil || out.ServerSideEncryption != types.ServerSideEncryptionAwsKms || aws.ToString(out.ETag) == quotedMD5(data) {
		t.Errorf("bare object: checksum %v, SSE %q, ETag %s", out.ChecksumCRC64NVME, out.ServerSideEncryption, aws.ToString(out.ETag))
	}
}

// DamageObject changes the stored bytes and nothing else.
func TestDamageObject(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	data := randomBytes(1<<20, 8)
	etag, err := srv.PutObject(bucket, "m", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.DamageObject(bucket, "m", 12345); err != nil {
		t.Fatal(err)
	}
	// A ranged GET: a whole-object one would fail the SDK's own check.
	got, out := get(t, c, &s3.GetObjectInput{Key: aws.String("m"), Range: aws.String("bytes=0-20000")})
	if aws.ToString(out.ETag) != etag || len(got) != 20001 || got[12345] != ^data[12345] || got[12344] != data[12344] {
		t.Fatalf("after damage: ETag %s (was %s), byte %x (was %x)", aws.ToString(out.ETag), etag, got[12345], data[12345])
	}
	if err := srv.DamageObject(bucket, "m", 1<<20); err == nil {
		t.Fatal("damage past the end succeeded")
	}
}

// A multipart object lists its parts through GetObjectAttributes, with its
// ETag unquoted, as S3 does.
func TestGetObjectAttributesParts(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	parts := [][]byte{randomBytes(5<<20, 1), randomBytes(5<<20, 2), randomBytes(1234, 3)}
	etag, err := srv.PutMultipartWith(bucket, "mp", parts, s3server.PutOptions{NoChecksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(etag, `-3"`) {
		t.Fatalf("multipart ETag %s", etag)
	}
	out, err := c.GetObjectAttributes(context.Background(), &s3.GetObjectAttributesInput{
		Bucket: aws.String(bucket), Key: aws.String("mp"), MaxParts: aws.Int32(2),
		ObjectAttributes: []types.ObjectAttributes{types.ObjectAttributesEtag, types.ObjectAttributesObjectParts, types.ObjectAttributesObjectSize},
	})
	if err != nil {
		t.Fatal(err)
	}
	op := out.ObjectParts
	if aws.ToString(out.ETag) != strings.Trim(etag, `"`) || aws.ToInt64(out.ObjectSize) != 10<<20+1234 || op == nil ||
		aws.ToInt32(op.TotalPartsCount) != 3 || !aws.ToBool(op.IsTruncated) || len(op.Parts) != 2 || aws.ToInt64(op.Parts[1].Size) != 5<<20 {
		t.Fatalf("GetObjectAttributes: %+v, parts %+v", out, op)
	}
}

// A composite checksum is the checksum of the parts' checksums, "-N".
func TestCompositeChecksum(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	parts := [][]byte{randomBytes(1000, 4), randomBytes(2000, 5)}
	if _, err := srv.PutMultipartWith(bucket, "cmp", parts, s3server.PutOptions{Checksum: "CRC32", Composite: true}); err != nil {
		t.Fatal(err)
	}
	outer := crc32.NewIEEE()
	for _, p := range parts {
		outer.Write(binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(p)))
	}
	want := base64.StdEncoding.EncodeToString(outer.Sum(nil)) + "-2"
	out, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("cmp"), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.ChecksumCRC32) != want || out.ChecksumType != types.ChecksumTypeComposite {
		t.Fatalf("HEAD: %s %s, want %s COMPOSITE", aws.ToString(out.ChecksumCRC32), out.ChecksumType, want)
	}
	if _, err := srv.PutMultipartWith(bucket, "x", parts, s3server.PutOptions{Checksum: "CRC64NVME", Composite: true}); err == nil {
		t.Fatal("a composite CRC64NVME was accepted; S3 keeps that one full-object only")
	}
}
