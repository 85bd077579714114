package s3server_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	accessKey = "AKIATESTEXAMPLE"
	// '/' and '+' make sure the secret is used verbatim.
	secretKey = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	region    = "us-east-1"
	bucket    = "models"
)

var creds = credentials.NewStaticCredentialsProvider(accessKey, secretKey, "")

// newServer starts a server with the test credentials on 127.0.0.1.
func newServer(t testing.TB, opts s3server.Options) *s3server.Server {
	t.Helper()
	opts.Dir = t.TempDir()
	if opts.AccessKey == "" {
		opts.AccessKey, opts.SecretKey = accessKey, secretKey
	}
	srv, err := s3server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// newClient returns an SDK client configured the way applications configure
// it (config.LoadDefaultConfig, so the SDK's defaults such as request
// checksums apply), pointed at endpoint with path-style addressing.
func newClient(endpoint string, cp aws.CredentialsProvider, optFns ...func(*s3.Options)) *s3.Client {
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(region),
		config.WithCredentialsProvider(cp),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	)
	if err != nil {
		panic(err) // only fails on malformed configuration files, and none are read
	}
	return s3.NewFromConfig(cfg, append([]func(*s3.Options){func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
		// Ranged GETs carry no checksum (as on S3); don't log each one.
		o.DisableLogOutputChecksumValidationSkipped = true
	}}, optFns...)...)
}

// setup starts a server with one bucket and returns it with a client.
func setup(t testing.TB, opts s3server.Options) (*s3server.Server, *s3.Client) {
	t.Helper()
	srv := newServer(t, opts)
	if err := srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	return srv, newClient(srv.URL(), creds)
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

func quotedMD5(b []byte) string {
	sum := md5.Sum(b)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

func put(t *testing.T, c *s3.Client, key string, data []byte) *s3.PutObjectOutput {
	t.Helper()
	out, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("PutObject %q: %v", key, err)
	}
	return out
}

func get(t *testing.T, c *s3.Client, in *s3.GetObjectInput) ([]byte, *s3.GetObjectOutput) {
	t.Helper()
	if in.Bucket == nil {
		in.Bucket = aws.String(bucket)
	}
	out, err := c.GetObject(context.Background(), in)
	if err != nil {
		t.Fatalf("GetObject %q: %v", aws.ToString(in.Key), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("reading GetObject %q: %v", aws.ToString(in.Key), err)
	}
	return b, out
}

// wantAPIError checks that err is the S3 error code with the HTTP status.
func wantAPIError(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (%d)", code, status)
	}
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("got %v, want HTTP status %d", err, status)
	}
	var ae smithy.APIError
	if code != "" && (!errors.As(err, &ae) || ae.ErrorCode() != code) {
		t.Fatalf("got %v, want error code %s", err, code)
	}
}

func TestBuckets(t *testing.T) {
	srv := newServer(t, s3server.Options{})
	c := newClient(srv.URL(), creds)
	ctx := context.Background()

	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("weights")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("weights")}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("weights")})
	var owned *types.BucketAlreadyOwnedByYou
	if !errors.As(err, &owned) {
		t.Fatalf("creating the bucket again: got %v, want BucketAlreadyOwnedByYou", err)
	}
	wantAPIError(t, err, "BucketAlreadyOwnedByYou", http.StatusConflict)

	_, err = c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("missing")})
	wantAPIError(t, err, "", http.StatusNotFound)
	_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("Bad_Name")})
	wantAPIError(t, err, "InvalidBucketName", http.StatusBadRequest)

	if err := srv.CreateBucket("another"); err != nil {
		t.Fatal(err)
	}
	out, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range out.Buckets {
		names = append(names, aws.ToString(b.Name))
		if b.CreationDate == nil || b.CreationDate.IsZero() {
			t.Errorf("bucket %s has no creation date", aws.ToString(b.Name))
		}
	}
	if want := []string{"another", "weights"}; !slices.Equal(names, want) {
		t.Fatalf("ListBuckets = %v, want %v", names, want)
	}

	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("weights"), Key: aws.String("x"), Body: strings.NewReader("x")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("weights")})
	wantAPIError(t, err, "BucketNotEmpty", http.StatusConflict)
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("weights"), Key: aws.String("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("weights")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("weights")})
	wantAPIError(t, err, "", http.StatusNotFound)
}

// recordHeaders records the headers of requests with the given method.
func recordHeaders(srv *s3server.Server, method string) func() []http.Header {
	var mu sync.Mutex
	var seen []http.Header
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == method {
			mu.Lock()
			seen = append(seen, r.Header.Clone())
			mu.Unlock()
		}
		return false
	})
	return func() []http.Header {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func crc32Base64(b []byte) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(b)))
}

// Over plain HTTP the SDK signs the payload's SHA-256 and sends its CRC32 in
// a header.
func TestPutGetOverHTTP(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	puts := recordHeaders(srv, http.MethodPut)
	data := randomBytes(1<<20+123, 1)

	out := put(t, c, "model.bin", data)
	if got := aws.ToString(out.ETag); got != quotedMD5(data) {
		t.Errorf("ETag = %s, want %s", got, quotedMD5(data))
	}
	h := puts()[0]
	sum := sha256.Sum256(data)
	if got := h.Get("X-Amz-Content-Sha256"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("x-amz-content-sha256 = %q, want the body's SHA-256", got)
	}
	if got := h.Get("X-Amz-Checksum-Crc32"); got != crc32Base64(data) {
		t.Errorf("x-amz-checksum-crc32 = %q, want %q", got, crc32Base64(data))
	}

	got, gout := get(t, c, &s3.GetObjectInput{Key: aws.String("model.bin")})
	if !bytes.Equal(got, data) {
		t.Fatalf("GetObject returned %d bytes that differ from the %d put", len(got), len(data))
	}
	// Returned because the SDK asks for it by default; the SDK validated
	// the body against it.
	if aws.ToString(gout.ChecksumCRC32) != crc32Base64(data) {
		t.Errorf("GetObject ChecksumCRC32 = %q, want %q", aws.ToString(gout.ChecksumCRC32), crc32Base64(data))
	}
	if aws.ToString(gout.ContentType) != "application/octet-stream" {
		t.Errorf("Content-Type = %q", aws.ToString(gout.ContentType))
	}
}

// Over HTTPS the SDK's default is an aws-chunked body with an unsigned
// payload and the CRC32 in a trailer.
func TestPutChunkedTrailerOverHTTPS(t *testing.T) {
	srv := newServer(t, s3server.Options{})
	if err := srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	defer ts.Close()
	c := newClient(ts.URL, creds, func(o *s3.Options) { o.HTTPClient = ts.Client() })
	puts := recordHeaders(srv, http.MethodPut)
	data := randomBytes(3<<20+7, 2)

	out := put(t, c, "chunked.bin", data)
	if got := aws.ToString(out.ETag); got != quotedMD5(data) {
		t.Errorf("ETag = %s, want %s (the MD5 of the payload, not of the framing)", got, quotedMD5(data))
	}
	h := puts()[0]
	for name, want := range map[string]string{
		"Content-Encoding":             "aws-chunked",
		"X-Amz-Content-Sha256":         "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
		"X-Amz-Trailer":                "x-amz-checksum-crc32",
		"X-Amz-Decoded-Content-Length": fmt.Sprint(len(data)),
	} {
		if got := h.Get(name); got != want {
			t.Errorf("SDK sent %s: %q, want %q", name, got, want)
		}
	}
	if aws.ToString(out.ChecksumCRC32) != crc32Base64(data) {
		t.Errorf("PutObject ChecksumCRC32 = %q, want %q", aws.ToString(out.ChecksumCRC32), crc32Base64(data))
	}

	got, gout := get(t, c, &s3.GetObjectInput{Key: aws.String("chunked.bin")})
	if !bytes.Equal(got, data) {
		t.Fatalf("GetObject returned %d bytes that differ from the %d put", len(got), len(data))
	}
	if aws.ToString(gout.ChecksumCRC32) != crc32Base64(data) {
		t.Errorf("GetObject ChecksumCRC32 = %q, want %q", aws.ToString(gout.ChecksumCRC32), crc32Base64(data))
	}
	head, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("chunked.bin")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt64(head.ContentLength) != int64(len(data)) || head.ContentEncoding != nil {
		t.Errorf("HeadObject: Content-Length %d, Content-Encoding %q; want %d and none", aws.ToInt64(head.ContentLength), aws.ToString(head.ContentEncoding), len(data))
	}
}

func TestRangedGets(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	const size = 100000
	data := randomBytes(size, 3)
	if _, err := srv.PutObject(bucket, "r.bin", data); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rng        string
		start, end int // inclusive
	}{
		{"bytes=0-0", 0, 0},
		{"bytes=10-99", 10, 99},
		{"bytes=99990-", 99990, size - 1},
		{"bytes=0-", 0, size - 1},
		{"bytes=-10", size - 10, size - 1},
		{"bytes=-200000", 0, size - 1},
		{"bytes=500-999999", 500, size - 1},
	}
	for _, tc := range tests {
		got, out := get(t, c, &s3.GetObjectInput{Key: aws.String("r.bin"), Range: aws.String(tc.rng)})
		if !bytes.Equal(got, data[tc.start:tc.end+1]) {
			t.Errorf("%s: got %d bytes, want bytes %d-%d", tc.rng, len(got), tc.start, tc.end)
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, size); aws.ToString(out.ContentRange) != want {
			t.Errorf("%s: Content-Range %q, want %q", tc.rng, aws.ToString(out.ContentRange), want)
		}
		if aws.ToInt64(out.ContentLength) != int64(tc.end-tc.start+1) {
			t.Errorf("%s: Content-Length %d", tc.rng, aws.ToInt64(out.ContentLength))
		}
	}

	for _, rng := range []string{"bytes=100000-", "bytes=-0"} {
		_, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("r.bin"), Range: aws.String(rng)})
		wantAPIError(t, err, "InvalidRange", http.StatusRequestedRangeNotSatisfiable)
	}
	// S3 ignores a Range it cannot parse and sends the whole object.
	got, out := get(t, c, &s3.GetObjectInput{Key: aws.String("r.bin"), Range: aws.String("bytes=9-5")})
	if !bytes.Equal(got, data) || out.ContentRange != nil {
		t.Errorf("invalid range: got %d bytes, Content-Range %q; want the whole object", len(got), aws.ToString(out.ContentRange))
	}
}

// fakeClock is a settable clock for object timestamps.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.t.Store(t.UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535000000, time.UTC)

func TestHeadObject(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	srv.SetClock(newFakeClock(t0).now)
	data := randomBytes(4321, 4)
	_, err := c.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("h.bin"), Body: bytes.NewReader(data),
		ContentType: aws.String("application/x-safetensors"),
		Metadata:    map[string]string{"sha": "abc", "Mixed-Case": "v"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("h.bin")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt64(out.ContentLength) != int64(len(data)) {
		t.Errorf("ContentLength = %d, want %d", aws.ToInt64(out.ContentLength), len(data))
	}
	if aws.ToString(out.ETag) != quotedMD5(data) {
		t.Errorf("ETag = %s, want %s", aws.ToString(out.ETag), quotedMD5(data))
	}
	if want := t0.Truncate(time.Second); !aws.ToTime(out.LastModified).Equal(want) {
		t.Errorf("LastModified = %v, want %v", aws.ToTime(out.LastModified), want)
	}
	if aws.ToString(out.ContentType) != "application/x-safetensors" {
		t.Errorf("ContentType = %q", aws.ToString(out.ContentType))
	}
	if want := map[string]string{"sha": "abc", "mixed-case": "v"}; fmt.Sprint(out.Metadata) != fmt.Sprint(want) {
		t.Errorf("Metadata = %v, want %v", out.Metadata, want)
	}
	if aws.ToString(out.AcceptRanges) != "bytes" {
		t.Errorf("AcceptRanges = %q", aws.ToString(out.AcceptRanges))
	}
}

func TestConditionalRequests(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	srv.SetClock(newFakeClock(t0).now)
	etag, err := srv.PutObject(bucket, "c.bin", []byte("conditional"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in := func(mod func(*s3.GetObjectInput)) *s3.GetObjectInput {
		i := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("c.bin")}
		mod(i)
		return i
	}
	before, after := t0.Add(-time.Hour), t0.Add(time.Hour)

	_, err = c.GetObject(ctx, in(func(i *s3.GetObjectInput) { i.IfMatch = aws.String(`"0123456789abcdef0123456789abcdef"`) }))
	wantAPIError(t, err, "PreconditionFailed", http.StatusPreconditionFailed)
	_, err = c.GetObject(ctx, in(func(i *s3.GetObjectInput) { i.IfUnmodifiedSince = aws.Time(before) }))
	wantAPIError(t, err, "PreconditionFailed", http.StatusPreconditionFailed)
	_, err = c.GetObject(ctx, in(func(i *s3.GetObjectInput) { i.IfNoneMatch = aws.String(etag) }))
	wantAPIError(t, err, "", http.StatusNotModified)
	_, err = c.GetObject(ctx, in(func(i *s3.GetObjectInput) { i.IfModifiedSince = aws.Time(after) }))
	wantAPIError(t, err, "", http.StatusNotModified)
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("c.bin"), IfMatch: aws.String(`"nope"`)})
	wantAPIError(t, err, "", http.StatusPreconditionFailed)

	// Conditions that hold, including S3's precedence rules: If-Match
	// overrides If-Unmodified-Since.
	for name, mod := range map[string]func(*s3.GetObjectInput){
		"If-Match":                           func(i *s3.GetObjectInput) { i.IfMatch = aws.String(etag) },
		"If-Match unquoted":                  func(i *s3.GetObjectInput) { i.IfMatch = aws.String(strings.Trim(etag, `"`)) },
		"If-None-Match other":                func(i *s3.GetObjectInput) { i.IfNoneMatch = aws.String(`"other"`) },
		"If-Modified-Since earlier":          func(i *s3.GetObjectInput) { i.IfModifiedSince = aws.Time(before) },
		"If-Unmodified-Since later":          func(i *s3.GetObjectInput) { i.IfUnmodifiedSince = aws.Time(after) },
		"If-Match beats If-Unmodified-Since": func(i *s3.GetObjectInput) { i.IfMatch = aws.String(etag); i.IfUnmodifiedSince = aws.Time(before) },
	} {
		got, _ := get(t, c, in(mod))
		if string(got) != "conditional" {
			t.Errorf("%s: got %q", name, got)
		}
	}

	if err := srv.DeleteObject(bucket, "c.bin"); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetObject(ctx, in(func(i *s3.GetObjectInput) { i.IfMatch = aws.String(etag) }))
	wantAPIError(t, err, "NoSuchKey", http.StatusNotFound)
}

func TestConditionalWrites(t *testing.T) {
	_, c := setup(t, s3server.Options{})
	ctx := context.Background()
	create := func(body string) error {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("w"), Body: strings.NewReader(body), IfNoneMatch: aws.String("*")})
		return err
	}
	if err := create("first"); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, create("second"), "PreconditionFailed", http.StatusPreconditionFailed)
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("w"), Body: strings.NewReader("third"), IfMatch: aws.String(`"0123"`)})
	wantAPIError(t, err, "PreconditionFailed", http.StatusPreconditionFailed)
	got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String("w")})
	if string(got) != "first" {
		t.Fatalf("object is %q after failed conditional writes, want %q", got, "first")
	}
}

func TestListObjectsV2Pagination(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	const n = 2500
	var want []string
	for _, i := range rand.Perm(n) { // insertion order must not matter
		key := fmt.Sprintf("dir/%05d.bin", i)
		if _, err := srv.PutObject(bucket, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
		want = append(want, key)
	}
	slices.Sort(want)
	for _, key := range []string{"dir", "dir0", "aaa/x", "zzz"} { // outside the prefix
		if _, err := srv.PutObject(bucket, key, nil); err != nil {
			t.Fatal(err)
		}
	}

	var got []string
	pages := 0
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("dir/")})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if int(aws.ToInt32(out.KeyCount)) != len(out.Contents) {
			t.Errorf("page %d: KeyCount %d, %d keys", pages, aws.ToInt32(out.KeyCount), len(out.Contents))
		}
		if truncated := aws.ToBool(out.IsTruncated); truncated != (pages < 3) {
			t.Errorf("page %d: IsTruncated = %v", pages, truncated)
		}
		for _, o := range out.Contents {
			key := aws.ToString(o.Key)
			got = append(got, key)
			if aws.ToInt64(o.Size) != int64(len(key)) || aws.ToString(o.ETag) != quotedMD5([]byte(key)) || o.StorageClass != types.ObjectStorageClassStandard || o.LastModified == nil {
				t.Fatalf("listing of %s: size %d, etag %s, storage class %q, last modified %v", key, aws.ToInt64(o.Size), aws.ToString(o.ETag), o.StorageClass, o.LastModified)
			}
		}
	}
	if pages != 3 {
		t.Errorf("%d pages, want 3 (1000 keys per page by default)", pages)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("listed %d keys, want the %d put, sorted", len(got), len(want))
	}

	// StartAfter with a small page size.
	out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), StartAfter: aws.String("dir/01000.bin"), MaxKeys: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	if want := []string{"dir/01001.bin", "dir/01002.bin", "dir/01003.bin"}; !slices.Equal(keys, want) || !aws.ToBool(out.IsTruncated) {
		t.Fatalf("StartAfter dir/01000.bin, MaxKeys 3: got %v (truncated %v), want %v", keys, aws.ToBool(out.IsTruncated), want)
	}
}

func TestListDelimiter(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	for _, key := range []string{"a/1", "a/2", "b/x/1", "b/x/2", "b/y", "c", "d/"} {
		if _, err := srv.PutObject(bucket, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	list := func(in *s3.ListObjectsV2Input) (keys, prefixes []string) {
		t.Helper()
		in.Bucket = aws.String(bucket)
		p := s3.NewListObjectsV2Paginator(c, in)
		for p.HasMorePages() {
			out, err := p.NextPage(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if int(aws.ToInt32(out.KeyCount)) != len(out.Contents)+len(out.CommonPrefixes) {
				t.Errorf("KeyCount %d for %d keys and %d prefixes", aws.ToInt32(out.KeyCount), len(out.Contents), len(out.CommonPrefixes))
			}
			for _, o := range out.Contents {
				keys = append(keys, aws.ToString(o.Key))
			}
			for _, cp := range out.CommonPrefixes {
				prefixes = append(prefixes, aws.ToString(cp.Prefix))
			}
		}
		return keys, prefixes
	}
	tests := []struct {
		in             s3.ListObjectsV2Input
		keys, prefixes []string
	}{
		{s3.ListObjectsV2Input{Delimiter: aws.String("/")}, []string{"c"}, []string{"a/", "b/", "d/"}},
		{s3.ListObjectsV2Input{Delimiter: aws.String("/"), Prefix: aws.String("b/")}, []string{"b/y"}, []string{"b/x/"}},
		{s3.ListObjectsV2Input{Delimiter: aws.String("/"), Prefix: aws.String("b/x/")}, []string{"b/x/1", "b/x/2"}, nil},
		{s3.ListObjectsV2Input{Delimiter: aws.String("x")}, []string{"a/1", "a/2", "b/y", "c", "d/"}, []string{"b/x"}},
		// One item per page: common prefixes must not repeat across pages.
		{s3.ListObjectsV2Input{Delimiter: aws.String("/"), MaxKeys: aws.Int32(1)}, []string{"c"}, []string{"a/", "b/", "d/"}},
		{s3.ListObjectsV2Input{Prefix: aws.String("b/"), MaxKeys: aws.Int32(1)}, []string{"b/x/1", "b/x/2", "b/y"}, nil},
	}
	for _, tc := range tests {
		keys, prefixes := list(&tc.in)
		if !slices.Equal(keys, tc.keys) || !slices.Equal(prefixes, tc.prefixes) {
			t.Errorf("prefix %q delimiter %q max-keys %d: keys %v, prefixes %v; want %v, %v",
				aws.ToString(tc.in.Prefix), aws.ToString(tc.in.Delimiter), aws.ToInt32(tc.in.MaxKeys), keys, prefixes, tc.keys, tc.prefixes)
		}
	}

	// ListObjects (version 1) with a marker.
	out, err := c.ListObjects(context.Background(), &s3.ListObjectsInput{Bucket: aws.String(bucket), Marker: aws.String("b/x/2"), MaxKeys: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	if want := []string{"b/y", "c"}; !slices.Equal(keys, want) || !aws.ToBool(out.IsTruncated) {
		t.Errorf("ListObjects after b/x/2: %v (truncated %v), want %v (truncated)", keys, aws.ToBool(out.IsTruncated), want)
	}
}

func TestAuthentication(t *testing.T) {
	srv, _ := setup(t, s3server.Options{})
	if _, err := srv.PutObject(bucket, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	getWith := func(cp aws.CredentialsProvider, optFns ...func(*s3.Options)) error {
		out, err := newClient(srv.URL(), cp, optFns...).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("k")})
		if err == nil {
			out.Body.Close()
		}
		return err
	}
	if err := getWith(creds); err != nil {
		t.Fatalf("valid credentials: %v", err)
	}
	// A session token is signed (x-amz-security-token) and accepted.
	if err := getWith(credentials.NewStaticCredentialsProvider(accessKey, secretKey, "session-token")); err != nil {
		t.Fatalf("valid credentials with a session token: %v", err)
	}
	wantAPIError(t, getWith(credentials.NewStaticCredentialsProvider(accessKey, "wrong-secret", "")), "SignatureDoesNotMatch", http.StatusForbidden)
	wantAPIError(t, getWith(credentials.NewStaticCredentialsProvider("AKIAUNKNOWN", secretKey, "")), "InvalidAccessKeyId", http.StatusForbidden)
	wantAPIError(t, getWith(aws.AnonymousCredentials{}), "AccessDenied", http.StatusForbidden)
	wantAPIError(t, getWith(creds, func(o *s3.Options) { o.Region = "eu-west-1" }), "AuthorizationHeaderMalformed", http.StatusBadRequest)
}

func TestAnonymous(t *testing.T) {
	srv, _ := setup(t, s3server.Options{AllowAnonymous: true})
	if _, err := srv.PutObject(bucket, "public.bin", []byte("public")); err != nil {
		t.Fatal(err)
	}
	anon := newClient(srv.URL(), aws.AnonymousCredentials{})
	got, _ := get(t, anon, &s3.GetObjectInput{Key: aws.String("public.bin")})
	if string(got) != "public" {
		t.Fatalf("anonymous GetObject = %q", got)
	}
	out, err := anon.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil || len(out.Contents) != 1 {
		t.Fatalf("anonymous ListObjectsV2: %v, %d keys", err, len(out.Contents))
	}
	// Signatures are still checked when present.
	_, err = newClient(srv.URL(), credentials.NewStaticCredentialsProvider(accessKey, "wrong", "")).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("public.bin")})
	wantAPIError(t, err, "SignatureDoesNotMatch", http.StatusForbidden)
}

func TestMissingBucketAndKey(t *testing.T) {
	_, c := setup(t, s3server.Options{})
	ctx := context.Background()

	_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("nope"), Key: aws.String("k")})
	wantAPIError(t, err, "NoSuchBucket", http.StatusNotFound)
	_, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("nope")})
	var nsb *types.NoSuchBucket
	if !errors.As(err, &nsb) {
		t.Errorf("ListObjectsV2 of a missing bucket: %v, want NoSuchBucket", err)
	}
	wantAPIError(t, err, "NoSuchBucket", http.StatusNotFound)
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("nope"), Key: aws.String("k"), Body: strings.NewReader("x")})
	wantAPIError(t, err, "NoSuchBucket", http.StatusNotFound)

	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")})
	var nsk *types.NoSuchKey
	if !errors.As(err, &nsk) {
		t.Errorf("GetObject of a missing key: %v, want NoSuchKey", err)
	}
	wantAPIError(t, err, "NoSuchKey", http.StatusNotFound)
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")})
	var nf *types.NotFound
	if !errors.As(err, &nf) {
		t.Errorf("HeadObject of a missing key: %v, want NotFound", err)
	}
	// Deleting what does not exist succeeds, as in S3.
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")}); err != nil {
		t.Errorf("DeleteObject of a missing key: %v", err)
	}
}

func TestReplaceObject(t *testing.T) {
	dir := t.TempDir()
	srv := newServerInDir(t, dir)
	clock := newFakeClock(t0)
	srv.SetClock(clock.now)
	c := newClient(srv.URL(), creds)
	ctx := context.Background()
	head := func() *s3.HeadObjectOutput {
		out, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("m.bin")})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	old := randomBytes(16<<20, 5)
	put(t, c, "m.bin", old)
	h1 := head()

	// Start reading the old version, then replace the object mid-read.
	reading, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("m.bin")})
	if err != nil {
		t.Fatal(err)
	}
	defer reading.Body.Close()
	clock.advance(time.Minute)
	replacement := randomBytes(1000, 6)
	put(t, c, "m.bin", replacement)

	h2 := head()
	if aws.ToString(h2.ETag) == aws.ToString(h1.ETag) || aws.ToString(h2.ETag) != quotedMD5(replacement) {
		t.Errorf("ETag after replacement %s (before %s), want %s", aws.ToString(h2.ETag), aws.ToString(h1.ETag), quotedMD5(replacement))
	}
	if !aws.ToTime(h2.LastModified).After(aws.ToTime(h1.LastModified)) {
		t.Errorf("LastModified after replacement %v, before %v", h2.LastModified, h1.LastModified)
	}
	if got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String("m.bin")}); !bytes.Equal(got, replacement) {
		t.Errorf("GetObject after replacement returned %d bytes, not the replacement", len(got))
	}
	gotOld, err := io.ReadAll(reading.Body)
	if err != nil {
		t.Fatalf("reading the old version after replacement: %v", err)
	}
	if !bytes.Equal(gotOld, old) {
		t.Fatalf("the read begun before the replacement returned %d bytes that are not the old version", len(gotOld))
	}
	// The old version's data file is gone; only the current one remains.
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("%d files in Dir (%v), want 1", len(entries), err)
	}
}

func newServerInDir(t *testing.T, dir string) *s3server.Server {
	t.Helper()
	srv, err := s3server.New(s3server.Options{Dir: dir, AccessKey: accessKey, SecretKey: secretKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func TestStats(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	data := randomBytes(1000, 7)
	if _, err := srv.PutObject(bucket, "s.bin", data); err != nil {
		t.Fatal(err)
	}
	srv.ResetStats()
	get(t, c, &s3.GetObjectInput{Key: aws.String("s.bin")})
	get(t, c, &s3.GetObjectInput{Key: aws.String("s.bin")})
	get(t, c, &s3.GetObjectInput{Key: aws.String("s.bin"), Range: aws.String("bytes=0-9")})
	if _, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("s.bin")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	put(t, c, "other", []byte("x"))

	want := s3server.Stats{Gets: 3, Heads: 1, Lists: 1, Puts: 1, BytesServed: 2*1000 + 10}
	if got := srv.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if n := srv.GetsFor(bucket, "s.bin"); n != 3 {
		t.Errorf("GetsFor(s.bin) = %d, want 3", n)
	}
	if n := srv.GetsFor(bucket, "other"); n != 0 {
		t.Errorf("GetsFor(other) = %d, want 0", n)
	}
	srv.ResetStats()
	if got := srv.Stats(); got != (s3server.Stats{}) || srv.GetsFor(bucket, "s.bin") != 0 {
		t.Errorf("after ResetStats: %+v, GetsFor %d", got, srv.GetsFor(bucket, "s.bin"))
	}
}

func TestAwkwardKeys(t *testing.T) {
	_, c := setup(t, s3server.Options{})
	keys := []string{
		"with space.bin",
		"ünïcødé/日本語.safetensors",
		"a+b=c&d",
		"100%.txt",
		"percent%2Fencoded",
		"question?mark#hash",
		"tilde~star*paren(1)!'",
		"semi;colon,comma:at@dollar$",
		"dir//double",
		"/leading-slash",
		"trailing/",
		"quote\"angle<>",
	}
	for i, key := range keys {
		put(t, c, key, []byte(fmt.Sprint(i)))
	}
	for i, key := range keys {
		if got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String(key)}); string(got) != fmt.Sprint(i) {
			t.Errorf("GetObject %q = %q, want %q", key, got, fmt.Sprint(i))
		}
	}
	want := slices.Sorted(slices.Values(keys))
	for _, encoding := range []types.EncodingType{"", types.EncodingTypeUrl} {
		out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), EncodingType: encoding})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range out.Contents {
			key := aws.ToString(o.Key)
			if encoding == types.EncodingTypeUrl {
				// The SDK leaves the decoding to the caller.
				if key, err = url.QueryUnescape(key); err != nil {
					t.Fatal(err)
				}
			}
			got = append(got, key)
		}
		if !slices.Equal(got, want) {
			t.Errorf("ListObjectsV2 (encoding %q) = %q, want %q", encoding, got, want)
		}
	}
	// A prefix with special characters travels in the (signed) query string.
	out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("ünïcødé/日")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 1 || aws.ToString(out.Contents[0].Key) != "ünïcødé/日本語.safetensors" {
		t.Errorf("ListObjectsV2 with a unicode prefix: %v", out.Contents)
	}
}

func TestVersioning(t *testing.T) {
	_, c := setup(t, s3server.Options{Versioning: true})
	ctx := context.Background()
	v1 := aws.ToString(put(t, c, "v.bin", []byte("one")).VersionId)
	v2 := aws.ToString(put(t, c, "v.bin", []byte("two")).VersionId)
	if v1 == "" || v2 == "" || v1 == v2 {
		t.Fatalf("version IDs %q and %q, want two distinct ones", v1, v2)
	}
	if got, out := get(t, c, &s3.GetObjectInput{Key: aws.String("v.bin")}); string(got) != "two" || aws.ToString(out.VersionId) != v2 {
		t.Errorf("current version: %q (version %s), want %q (version %s)", got, aws.ToString(out.VersionId), "two", v2)
	}
	if got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String("v.bin"), VersionId: aws.String(v1)}); string(got) != "one" {
		t.Errorf("version %s: %q, want %q", v1, got, "one")
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("v.bin"), VersionId: aws.String(v1)})
	if err != nil || aws.ToString(head.ETag) != quotedMD5([]byte("one")) {
		t.Errorf("HeadObject version %s: %v, ETag %s", v1, err, aws.ToString(head.ETag))
	}

	del, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("v.bin")})
	if err != nil {
		t.Fatal(err)
	}
	if !aws.ToBool(del.DeleteMarker) || aws.ToString(del.VersionId) == "" {
		t.Errorf("DeleteObject: DeleteMarker %v, VersionId %q; want a delete marker", aws.ToBool(del.DeleteMarker), aws.ToString(del.VersionId))
	}
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("v.bin")})
	wantAPIError(t, err, "NoSuchKey", http.StatusNotFound)
	if got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String("v.bin"), VersionId: aws.String(v2)}); string(got) != "two" {
		t.Errorf("version %s after delete: %q", v2, got)
	}
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil || len(out.Contents) != 0 {
		t.Errorf("ListObjectsV2 after delete: %v, %d keys; want none", err, len(out.Contents))
	}

	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("v.bin"), VersionId: aws.String(v1)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("v.bin"), VersionId: aws.String(v1)})
	wantAPIError(t, err, "NoSuchVersion", http.StatusNotFound)

	vc, err := c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(bucket)})
	if err != nil || vc.Status != types.BucketVersioningStatusEnabled {
		t.Errorf("GetBucketVersioning: %v, %q", err, vc.Status)
	}
}

func TestNoVersioning(t *testing.T) {
	_, c := setup(t, s3server.Options{})
	if out := put(t, c, "v.bin", []byte("one")); out.VersionId != nil {
		t.Errorf("PutObject returned version %q without versioning", aws.ToString(out.VersionId))
	}
	_, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("v.bin"), VersionId: aws.String("3HL4kqtJlcpXroDTDmJ")})
	wantAPIError(t, err, "InvalidArgument", http.StatusBadRequest)
}

func TestPresignedURLs(t *testing.T) {
	_, c := setup(t, s3server.Options{})
	ctx := context.Background()
	pc := s3.NewPresignClient(c)

	data := randomBytes(5000, 8)
	preq, err := pc.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("pre signed.bin")})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(preq.Method, preq.URL, bytes.NewReader(data))
	req.Header = preq.SignedHeader.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != quotedMD5(data) {
		t.Fatalf("presigned PUT: %s, ETag %s", resp.Status, resp.Header.Get("ETag"))
	}

	greq, err := pc.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("pre signed.bin")})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(greq.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("presigned GET: %s, %d bytes", resp.Status, len(got))
	}

	// Tampering with the signed query string breaks the signature.
	resp, err = http.Get(strings.Replace(greq.URL, "X-Amz-Expires=", "X-Amz-Expires=1", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered presigned GET: %s, want 403", resp.Status)
	}
}

func TestMultipartUpload(t *testing.T) {
	_, c := setup(t, s3server.Options{})
	ctx := context.Background()
	key := aws.String("big model.safetensors")
	create, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: key, ContentType: aws.String("application/x-safetensors")})
	if err != nil {
		t.Fatal(err)
	}
	parts := [][]byte{randomBytes(5<<20, 9), randomBytes(5<<20+1, 10), randomBytes(1234, 11)}
	var completed []types.CompletedPart
	etagHash := md5.New()
	for i, p := range parts {
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: key, UploadId: create.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.ETag) != quotedMD5(p) {
			t.Errorf("part %d ETag %s, want %s", i+1, aws.ToString(out.ETag), quotedMD5(p))
		}
		sum := md5.Sum(p)
		etagHash.Write(sum[:])
		completed = append(completed, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag})
	}
	done, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: key, UploadId: create.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: completed}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `"` + hex.EncodeToString(etagHash.Sum(nil)) + `-3"`; aws.ToString(done.ETag) != want {
		t.Errorf("multipart ETag %s, want %s", aws.ToString(done.ETag), want)
	}
	all := bytes.Join(parts, nil)
	got, out := get(t, c, &s3.GetObjectInput{Key: key})
	if !bytes.Equal(got, all) || aws.ToString(out.ContentType) != "application/x-safetensors" {
		t.Fatalf("GetObject of the multipart object: %d bytes (want %d), Content-Type %q", len(got), len(all), aws.ToString(out.ContentType))
	}
	got, out = get(t, c, &s3.GetObjectInput{Key: key, PartNumber: aws.Int32(2)})
	if !bytes.Equal(got, parts[1]) || aws.ToInt32(out.PartsCount) != 3 {
		t.Fatalf("GetObject part 2: %d bytes (want %d), PartsCount %d", len(got), len(parts[1]), aws.ToInt32(out.PartsCount))
	}

	// Parts other than the last must be at least 5 MiB; aborted uploads are gone.
	create, err = c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("small")})
	if err != nil {
		t.Fatal(err)
	}
	completed = nil
	for i := range 2 {
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("small"), UploadId: create.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: strings.NewReader("tiny")})
		if err != nil {
			t.Fatal(err)
		}
		completed = append(completed, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag})
	}
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("small"), UploadId: create.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: completed}})
	wantAPIError(t, err, "EntityTooSmall", http.StatusBadRequest)
	if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("small"), UploadId: create.UploadId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("small"), UploadId: create.UploadId, PartNumber: aws.Int32(3), Body: strings.NewReader("late")})
	wantAPIError(t, err, "NoSuchUpload", http.StatusNotFound)
}

func TestHook(t *testing.T) {
	srv, _ := setup(t, s3server.Options{})
	if _, err := srv.PutObject(bucket, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // the SDK retries this
			return true
		}
		return false
	})
	noBackoff := func(o *s3.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	}
	c := newClient(srv.URL(), creds, noBackoff)
	if got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String("k")}); string(got) != "v" {
		t.Fatalf("GetObject after an injected 503 = %q", got)
	}
	if calls.Load() != 2 || srv.GetsFor(bucket, "k") != 1 {
		t.Errorf("hook saw %d requests, server served %d GETs; want 2 and 1", calls.Load(), srv.GetsFor(bucket, "k"))
	}
	srv.SetHook(nil)
	get(t, c, &s3.GetObjectInput{Key: aws.String("k")})
	if calls.Load() != 2 {
		t.Errorf("removed hook still called")
	}
}

// Many concurrent ranged reads, as a FUSE filesystem prefetching a model
// does; run with -race.
func TestConcurrentRangedGets(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	data := randomBytes(16<<20, 12)
	if _, err := srv.PutObject(bucket, "big.bin", data); err != nil {
		t.Fatal(err)
	}
	srv.ResetStats()
	var wg sync.WaitGroup
	var served atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 0))
			for range 4 {
				start := r.IntN(len(data))
				end := min(start+r.IntN(1<<20), len(data)-1)
				out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("big.bin"), Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, end))})
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(out.Body)
				out.Body.Close()
				if err != nil || !bytes.Equal(got, data[start:end+1]) {
					t.Errorf("range %d-%d: %v, %d bytes that differ", start, end, err, len(got))
					return
				}
				served.Add(int64(len(got)))
			}
		})
	}
	wg.Wait()
	if st := srv.Stats(); st.Gets != 16*4 || st.BytesServed != served.Load() {
		t.Errorf("Stats %+v, want %d GETs and %d bytes", st, 16*4, served.Load())
	}
}

// signedRequest builds a request signed with the SDK's SigV4 signer.
func signedRequest(t *testing.T, method, rawURL string, body []byte, payloadHash string, header http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("x-amz-content-sha256", payloadHash)
	c, _ := creds.Retrieve(context.Background())
	err = v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).
		SignHTTP(context.Background(), c, req, payloadHash, "s3", region, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestErrorResponses(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	resp, body := do(t, signedRequest(t, "GET", srv.URL()+"/"+bucket+"/no/such%20key", nil, hexSHA256(nil), nil))
	var e struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		Key       string
		Resource  string
		RequestID string `xml:"RequestId"`
	}
	if err := xml.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if resp.StatusCode != http.StatusNotFound || e.Code != "NoSuchKey" || e.Message == "" || e.Key != "no/such key" ||
		e.Resource != "/"+bucket+"/no/such key" || e.RequestID == "" || e.RequestID != resp.Header.Get("x-amz-request-id") {
		t.Errorf("missing key: %s, Content-Type %s, %+v", resp.Status, resp.Header.Get("Content-Type"), e)
	}

	resp, body = do(t, signedRequest(t, "HEAD", srv.URL()+"/"+bucket+"/nope", nil, hexSHA256(nil), nil))
	if resp.StatusCode != http.StatusNotFound || len(body) != 0 || resp.Header.Get("x-amz-request-id") == "" {
		t.Errorf("HEAD of a missing key: %s, %d body bytes, request id %q", resp.Status, len(body), resp.Header.Get("x-amz-request-id"))
	}

	// Operations this server does not implement say so.
	if _, err := srv.PutObject(bucket, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	_, err := c.GetObjectAcl(context.Background(), &s3.GetObjectAclInput{Bucket: aws.String(bucket), Key: aws.String("k")})
	wantAPIError(t, err, "NotImplemented", http.StatusNotImplemented)
	_, err = c.CopyObject(context.Background(), &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("k2"), CopySource: aws.String(bucket + "/k")})
	wantAPIError(t, err, "NotImplemented", http.StatusNotImplemented)
	resp, _ = do(t, signedRequest(t, "POST", srv.URL()+"/"+bucket+"/k", nil, hexSHA256(nil), nil))
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST to an object: %s, want 405", resp.Status)
	}
}

func TestPayloadIntegrity(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	ctx := context.Background()
	objectURL := srv.URL() + "/" + bucket + "/integrity"
	exists := func() bool {
		_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("integrity")})
		return err == nil
	}

	// A body that does not match the signed x-amz-content-sha256.
	resp, body := do(t, signedRequest(t, "PUT", objectURL, []byte("tampered"), hexSHA256([]byte("original")), nil))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "XAmzContentSHA256Mismatch") || exists() {
		t.Errorf("SHA-256 mismatch: %s %s (stored: %v)", resp.Status, body, exists())
	}

	// Content-MD5 and x-amz-checksum-* are verified.
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("integrity"), Body: strings.NewReader("data"), ContentMD5: aws.String(base64.StdEncoding.EncodeToString(make([]byte, 16)))})
	wantAPIError(t, err, "BadDigest", http.StatusBadRequest)
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("integrity"), Body: strings.NewReader("data"), ChecksumCRC32: aws.String(crc32Base64([]byte("other")))})
	wantAPIError(t, err, "BadDigest", http.StatusBadRequest)
	if exists() {
		t.Error("an upload that failed verification was stored")
	}
}

// chunked frames data as aws-chunked with chunks of size n; sign, if set,
// returns the chunk-signature of each chunk's data.
func chunked(data []byte, n int, sign func([]byte) string, trailer string) []byte {
	var b bytes.Buffer
	frame := func(chunk []byte) {
		fmt.Fprintf(&b, "%x", len(chunk))
		if sign != nil {
			fmt.Fprintf(&b, ";chunk-signature=%s", sign(chunk))
		}
		b.WriteString("\r\n")
		b.Write(chunk)
		if len(chunk) > 0 {
			b.WriteString("\r\n")
		}
	}
	for rest := data; len(rest) > 0; rest = rest[min(n, len(rest)):] {
		frame(rest[:min(n, len(rest))])
	}
	frame(nil)
	b.WriteString(trailer)
	b.WriteString("\r\n")
	return b.Bytes()
}

func TestChunkedUploadsOverHTTP(t *testing.T) {
	srv, c := setup(t, s3server.Options{})
	data := randomBytes(200000, 13)
	headers := func(decoded int, extra ...string) http.Header {
		h := http.Header{"Content-Encoding": {"aws-chunked"}, "X-Amz-Decoded-Content-Length": {fmt.Sprint(decoded)}}
		for i := 0; i < len(extra); i += 2 {
			h.Set(extra[i], extra[i+1])
		}
		return h
	}
	check := func(name, key string, resp *http.Response, body []byte, ok bool) {
		t.Helper()
		if ok {
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %s %s", name, resp.Status, body)
			}
			if got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String(key)}); !bytes.Equal(got, data) {
				t.Fatalf("%s: stored %d bytes that differ from the %d sent", name, len(got), len(data))
			}
		} else if resp.StatusCode < 400 {
			t.Fatalf("%s: %s, want an error", name, resp.Status)
		}
	}

	// Several unsigned chunks with a CRC32 trailer.
	trailer := "x-amz-checksum-crc32:" + crc32Base64(data) + "\r\n"
	body := chunked(data, 65536, nil, trailer)
	resp, rb := do(t, signedRequest(t, "PUT", srv.URL()+"/"+bucket+"/unsigned", body, "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
		headers(len(data), "x-amz-trailer", "x-amz-checksum-crc32")))
	check("unsigned chunks", "unsigned", resp, rb, true)

	badTrailer := "x-amz-checksum-crc32:" + crc32Base64([]byte("x")) + "\r\n"
	resp, rb = do(t, signedRequest(t, "PUT", srv.URL()+"/"+bucket+"/bad", chunked(data, 65536, nil, badTrailer), "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
		headers(len(data), "x-amz-trailer", "x-amz-checksum-crc32")))
	check("wrong trailer checksum", "bad", resp, rb, false)

	// Signed chunks, each signature chained from the request's (the seed).
	signedUpload := func(key string, tamper bool) (*http.Response, []byte) {
		// The seed signature covers Content-Length, so sign a placeholder
		// of the final length first; chunk signatures are all 64 bytes.
		placeholder := chunked(data, 65536, func([]byte) string { return strings.Repeat("0", 64) }, "")
		req := signedRequest(t, "PUT", srv.URL()+"/"+bucket+"/"+key, placeholder, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", headers(len(data)))
		authz := req.Header.Get("Authorization")
		prev := authz[strings.LastIndex(authz, "Signature=")+len("Signature="):]
		amzDate := req.Header.Get("X-Amz-Date")
		scope := amzDate[:8] + "/" + region + "/s3/aws4_request"
		signingKey := hmacChain([]byte("AWS4"+secretKey), amzDate[:8], region, "s3", "aws4_request")
		body := chunked(data, 65536, func(chunk []byte) string {
			sts := strings.Join([]string{"AWS4-HMAC-SHA256-PAYLOAD", amzDate, scope, prev, hexSHA256(nil), hexSHA256(chunk)}, "\n")
			prev = hex.EncodeToString(hmacChain(signingKey, sts))
			return prev
		}, "")
		if len(body) != len(placeholder) {
			t.Fatalf("signed body is %d bytes, placeholder %d", len(body), len(placeholder))
		}
		if tamper {
			body[100] ^= 1 // a data byte of the first chunk
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		return do(t, req)
	}
	resp, rb = signedUpload("signed", false)
	check("signed chunks", "signed", resp, rb, true)
	resp, rb = signedUpload("tampered", true)
	check("tampered signed chunk", "tampered", resp, rb, false)
	if !strings.Contains(string(rb), "SignatureDoesNotMatch") {
		t.Errorf("tampered signed chunk: %s", rb)
	}
}

func hmacChain(key []byte, data ...string) []byte {
	for _, d := range data {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(d))
		key = m.Sum(nil)
	}
	return key
}

// BenchmarkParallelRangedGets measures the throughput of 16 concurrent SDK
// clients reading random 8 MiB ranges of a 1 GiB object.
func BenchmarkParallelRangedGets(b *testing.B) {
	srv, c := setup(b, s3server.Options{})
	const size, rangeSize = 1 << 30, 8 << 20
	path := filepath.Join(b.TempDir(), "model.bin")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, io.LimitReader(rand.NewChaCha8([32]byte{}), size)); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if _, err := srv.PutObjectFromFile(bucket, "model.bin", path); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(rangeSize)
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var buf [1 << 20]byte
		for pb.Next() {
			start := rand.Int64N(size - rangeSize)
			out, err := c.GetObject(context.Background(), &s3.GetObjectInput{
				Bucket: aws.String(bucket), Key: aws.String("model.bin"),
				Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, start+rangeSize-1)),
			})
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.CopyBuffer(io.Discard, out.Body, buf[:])
			out.Body.Close()
			if err != nil || n != rangeSize {
				b.Errorf("read %d bytes: %v", n, err)
				return
			}
		}
	})
}
