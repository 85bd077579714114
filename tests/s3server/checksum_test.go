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

// A multipart upload over HTTP keeps the checksum CreateMultipartUpload
// asked for, as S3 does: by default the composite one of CRC32, CRC32C,
// SHA1 and SHA256 (over the parts' checksums, "-N"), FULL_OBJECT where
// asked and allowed (CRC32, CRC32C, CRC64NVME); a type the algorithm does
// not allow, and parts sent with another algorithm, are refused.
func TestMultipartChecksums(t *testing.T) {
	_, c := setup(t, s3server.Options{})
	ctx := context.Background()
	parts := [][]byte{randomBytes(5<<20, 21), randomBytes(5<<20+3, 22), randomBytes(777, 23)}
	all := strings.Join([]string{string(parts[0]), string(parts[1]), string(parts[2])}, "")
	crc32c := func(p []byte) []byte {
		return binary.BigEndian.AppendUint32(nil, crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)))
	}
	sha := func(p []byte) []byte { s := sha256.Sum256(p); return s[:] }
	composite := func(sum func([]byte) []byte) string {
		var cat []byte
		for _, p := range parts {
			cat = append(cat, sum(p)...)
		}
		return base64.StdEncoding.EncodeToString(sum(cat)) + "-3"
	}
	b64 := base64.StdEncoding.EncodeToString

	upload := func(key string, algo types.ChecksumAlgorithm, typ types.ChecksumType) (*s3.CompleteMultipartUploadOutput, *s3.HeadObjectOutput, error) {
		create, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key),
			ChecksumAlgorithm: algo, ChecksumType: typ})
		if err != nil {
			return nil, nil, err
		}
		if create.ChecksumAlgorithm != algo || (typ != "" && create.ChecksumType != typ) {
			t.Errorf("%s: CreateMultipartUpload answered %q %q", key, create.ChecksumAlgorithm, create.ChecksumType)
		}
		var done []types.CompletedPart
		for i, p := range parts {
			out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: create.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), Body: strings.NewReader(string(p)), ChecksumAlgorithm: algo})
			if err != nil {
				return nil, nil, err
			}
			done = append(done, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag,
				ChecksumCRC32C: out.ChecksumCRC32C, ChecksumSHA256: out.ChecksumSHA256, ChecksumCRC64NVME: out.ChecksumCRC64NVME})
		}
		fin, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key),
			UploadId: create.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
		if err != nil {
			return nil, nil, err
		}
		head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
		return fin, head, err
	}

	for _, tc := range []struct {
		key  string
		algo types.ChecksumAlgorithm
		typ  types.ChecksumType
		want func(*s3.HeadObjectOutput) string
		val  string
		kind types.ChecksumType
	}{
		{"crc32c-default", types.ChecksumAlgorithmCrc32c, "", func(h *s3.HeadObjectOutput) string { return aws.ToString(h.ChecksumCRC32C) },
			composite(crc32c), types.ChecksumTypeComposite},
		{"sha256-composite", types.ChecksumAlgorithmSha256, types.ChecksumTypeComposite, func(h *s3.HeadObjectOutput) string { return aws.ToString(h.ChecksumSHA256) },
			composite(sha), types.ChecksumTypeComposite},
		{"crc32c-full", types.ChecksumAlgorithmCrc32c, types.ChecksumTypeFullObject, func(h *s3.HeadObjectOutput) string { return aws.ToString(h.ChecksumCRC32C) },
			b64(crc32c([]byte(all))), types.ChecksumTypeFullObject},
	} {
		fin, head, err := upload(tc.key, tc.algo, tc.typ)
		if err != nil {
			t.Fatalf("%s: %v", tc.key, err)
		}
		if got := tc.want(head); got != tc.val || head.ChecksumType != tc.kind {
			t.Errorf("%s: HEAD gives %q %s, want %q %s", tc.key, got, head.ChecksumType, tc.val, tc.kind)
		}
		if head.ChecksumCRC64NVME != nil {
			t.Errorf("%s: a CRC64NVME %q besides the checksum asked for", tc.key, aws.ToString(head.ChecksumCRC64NVME))
		}
		if fin.ChecksumType != tc.kind {
			t.Errorf("%s: CompleteMultipartUpload gives checksum type %q, want %s", tc.key, fin.ChecksumType, tc.kind)
		}
	}

	for _, bad := range []struct {
		algo types.ChecksumAlgorithm
		typ  types.ChecksumType
	}{{types.ChecksumAlgorithmSha256, types.ChecksumTypeFullObject}, {types.ChecksumAlgorithmCrc64nvme, types.ChecksumTypeComposite}} {
		_, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("bad"),
			ChecksumAlgorithm: bad.algo, ChecksumType: bad.typ})
		wantAPIError(t, err, "InvalidRequest", 400)
	}
	create, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("mixed"),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("mixed"), UploadId: create.UploadId,
		PartNumber: aws.Int32(1), Body: strings.NewReader("x"), ChecksumAlgorithm: types.ChecksumAlgorithmSha1})
	wantAPIError(t, err, "InvalidRequest", 400)
}
