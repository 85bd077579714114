package publish

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	testBucket = "models"
	testKey    = "AKIDPUBLISHTEST"
	testSecret = "publish-test-secret"
)

// startS3 starts the test S3 server on loopback with one bucket and
// points the SDK's default credential chain at its keys.
func startS3(t *testing.T) *s3server.Server {
	t.Helper()
	srv := s3server.StartTest(t, s3server.Options{AccessKey: testKey, SecretKey: testSecret}, testBucket)
	t.Setenv("AWS_ACCESS_KEY_ID", testKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testSecret)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return srv
}

func testConfig(srv *s3server.Server, out io.Writer, log *slog.Logger) Config {
	return Config{
		S3:          fetch.S3ClientOptions{Endpoint: srv.URL(), Logger: log},
		Retry:       fetch.RetryOptions{MaxAttempts: 2, AttemptTimeout: 10 * time.Second},
		Concurrency: 4,
		FrameSize:   pack.MinFrameSize,
		CopyBelow:   64 << 10,
		Logger:      log,
		Out:         out,
	}
}

func newClient(t *testing.T, srv *s3server.Server) *s3.Client {
	t.Helper()
	c, err := fetch.NewS3Client(context.Background(), fetch.S3ClientOptions{Endpoint: srv.URL(), SDKRetries: true, SDKMaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func getObject(t *testing.T, c *s3.Client, key string) []byte {
	t.Helper()
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("getting %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>13)
	}
	return b
}

// An object that fits one part is one PutObject; a bigger one is a
// multipart upload whose parts, sent while later ones are written, come
// back together in order.
func TestS3WriterUploads(t *testing.T) {
	srv := startS3(t)
	c := newClient(t, srv)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		size      int
		multipart bool
	}{
		{"small", 1000, false},
		{"empty", 0, false},
		{"three-parts", 2*(5<<20) + 12345, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := pattern(tc.size)
			w := &s3Writer{ctx: ctx, client: c, bucket: testBucket, key: "p/" + tc.name}
			w.p.init(5<<20, 2)
			// Odd-sized writes, so that parts are cut across them.
			for b := want; len(b) > 0; {
				n := min(len(b), 777777)
				if _, err := w.Write(b[:n]); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
			if got := w.uploadID != nil; got != tc.multipart {
				t.Errorf("multipart upload started: %v, want %v", got, tc.multipart)
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if got := getObject(t, c, "p/"+tc.name); !bytes.Equal(got, want) {
				t.Errorf("object holds %d bytes, not the %d written", len(got), len(want))
			}
		})
	}
}

// A part that fails fails Commit, naming the part; the upload is aborted
// and nothing appears at the key.
func TestS3WriterFailedPartAborts(t *testing.T) {
	srv := startS3(t)
	c := newClient(t, srv)
	ctx := context.Background()
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == "2" {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
			return true
		}
		return false
	})
	w := &s3Writer{ctx: ctx, client: c, bucket: testBucket, key: "p/failed"}
	w.p.init(5<<20, 2)
	if _, err := w.Write(pattern(3 * (5 << 20))); err != nil && !strings.Contains(err.Error(), "part 2") {
		t.Fatal(err)
	}
	id := w.uploadID
	if id == nil {
		t.Fatal("no multipart upload was started")
	}
	err := w.Commit()
	if err == nil || !strings.Contains(err.Error(), "uploading part 2 of p/failed") {
		t.Fatalf("Commit: %v, want the failed part named", err)
	}
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("p/failed")})
	var nf *types.NotFound
	if !errors.As(err, &nf) {
		t.Errorf("HeadObject after a failed upload: %v, want NotFound", err)
	}
	// Aborted: the upload can no longer be completed.
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(testBucket), Key: aws.String("p/failed"), UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{PartNumber: aws.Int32(1)}}},
	})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "NoSuchUpload" {
		t.Errorf("completing the aborted upload: %v, want NoSuchUpload", err)
	}
}

func TestPartSize(t *testing.T) {
	for _, size := range []int64{0, 1 << 20, 100 << 30, 2 << 40} {
		p := int64(partSize(size))
		if p < partMin || p%(1<<20) != 0 {
			t.Errorf("partSize(%d) = %d: want a whole MiB of at least %d", size, p, partMin)
		}
		if parts := size/p + 1; parts > 10000 {
			t.Errorf("partSize(%d) = %d: %d parts, S3 takes 10 000", size, p, parts)
		}
	}
}

// writeModel writes a small model directory: a safetensors file big
// enough to pack and a config small enough to copy.
func writeModel(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	_, err := modelgen.WriteSafetensors(filepath.Join(dir, "model.safetensors"), []modelgen.TensorSpec{
		{Name: "w", DType: "BF16", Shape: []int64{256, 640}},
		{Name: "norm", DType: "F32", Shape: []int64{640}},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type":"test"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, name := range []string{"model.safetensors", "config.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	return dir, files
}

// Pack writes to S3 what a mount of the prefix shows as the original
// files; Verify passes on it, and fails naming a file whose pack was
// damaged.
func TestPackAndVerifyS3(t *testing.T) {
	srv := startS3(t)
	ctx := context.Background()
	src, files := writeModel(t)
	var logs, out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := testConfig(srv, &out, log)
	// A stale pack of the config, from a run with a lower --copy-below.
	if _, err := srv.PutObject(testBucket, "m/config.json"+pack.Suffix, []byte("stale")); err != nil {
		t.Fatal(err)
	}

	if err := Pack(ctx, src, "s3://"+testBucket+"/m", cfg); err != nil {
		t.Fatalf("Pack: %v\n%s", err, logs.String())
	}
	for _, line := range []string{"copied config.json (", "packed model.safetensors: ", "packed 2 files into s3://" + testBucket + "/m/: "} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
	c := newClient(t, srv)
	if got := getObject(t, c, "m/config.json"); !bytes.Equal(got, files["config.json"]) {
		t.Errorf("config.json copied as %q", got)
	}
	_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("m/config.json" + pack.Suffix)})
	if err == nil {
		t.Error("the stale pack of config.json is still there")
	}

	// Read back through the pack layer, as a mount does.
	inner, err := fetch.NewS3(ctx, fetch.S3Options{Bucket: testBucket, Prefix: "m", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pack.NewSource(inner, pack.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ps.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(files) {
		t.Fatalf("listed %v, want %d files", objs, len(files))
	}
	for _, o := range objs {
		b := make([]byte, o.Size)
		if _, err := ps.ReadAt(ctx, o, b, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(b, files[o.Key]) {
			t.Errorf("%s reads back different", o.Key)
		}
	}

	out.Reset()
	if err := Verify(ctx, src, "s3://"+testBucket+"/m", cfg); err != nil {
		t.Fatalf("Verify: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ok model.safetensors ") || !strings.Contains(out.String(), "verified 2 files") {
		t.Errorf("Verify output:\n%s", out.String())
	}

	// Damage the pack's first frame, right after the 16-byte header.
	if err := srv.DamageObject(testBucket, "m/model.safetensors"+pack.Suffix, 100); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = Verify(ctx, "", "s3://"+testBucket+"/m", cfg)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 files failed: model.safetensors: ") {
		t.Errorf("Verify of a damaged pack: %v", err)
	}
	if !strings.Contains(out.String(), "FAILED model.safetensors: ") {
		t.Errorf("Verify output names no failure:\n%s", out.String())
	}
}

// Pack to a local directory writes files as the S3 destination does, with
// nothing left under a temporary name; Verify against SRC_DIR finds a
// file that is missing.
func TestPackAndVerifyLocal(t *testing.T) {
	ctx := context.Background()
	src, _ := writeModel(t)
	dest := filepath.Join(t.TempDir(), "out")
	var out bytes.Buffer
	cfg := Config{Concurrency: 2, FrameSize: pack.MinFrameSize, CopyBelow: 64 << 10,
		Logger: slog.New(slog.DiscardHandler), Out: &out}
	if err := Pack(ctx, src, dest, cfg); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dest)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v, want 0644", e.Name(), info.Mode().Perm())
		}
	}
	if got := strings.Join(names, " "); got != "config.json model.safetensors"+pack.Suffix {
		t.Errorf("DEST holds %s", got)
	}
	if err := Verify(ctx, src, dest, cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dest, "config.json")); err != nil {
		t.Fatal(err)
	}
	err = Verify(ctx, src, dest, cfg)
	if err == nil || !strings.Contains(err.Error(), "config.json: missing from ") {
		t.Errorf("Verify with a file missing: %v", err)
	}
}

func TestOpenDestRefuses(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	for dest, want := range map[string]string{
		filepath.Join(src, "packed"): "is inside SRC_DIR",
		src:                          "is inside SRC_DIR",
		"https://example.com/x":      "want a local directory, s3://bucket/prefix, az://account/container/prefix or gs://bucket/prefix",
		"gs://models/x":              "writing to Cloud Storage needs credentials",
		"az://acct1/models/x":        "writing to Azure needs credentials",
	} {
		// Anonymous access fits gs:// and az:// to read, not to write.
		cfg := Config{S3: fetch.S3ClientOptions{NoSignRequest: strings.Contains(dest, "://") && !strings.HasPrefix(dest, "https")}}
		if _, err := OpenDest(ctx, dest, src, cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenDest(%s): %v, want %q", dest, err, want)
		}
	}
}
