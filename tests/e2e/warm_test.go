package e2e

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// warm needs no FUSE: it fills the disk cache straight from the source.
func TestWarmFillsResumesAndVerifies(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	warm := func(extra ...string) (int, string) {
		args := append(append([]string{"warm"}, r.mountArgs()...), "--cache-dir", cacheDir, "--block-size", "1MiB")
		return runCLI(t, testEnv(), append(append(args, extra...), "s3://"+bucket)...)
	}
	shard := biggest(t)
	good := "--sha256=" + shard + "=" + hexSum(sourceBytes(t, shard))

	if code, stderr := warm(good); code != 0 {
		t.Fatalf("warm: exit %d: %s", code, stderr)
	}
	first := r.srv.Stats().Gets
	if first == 0 {
		t.Fatal("warm made no GETs")
	}

	// A rerun finds everything cached and fetches nothing.
	r.srv.ResetStats()
	if code, stderr := warm(good); code != 0 {
		t.Fatalf("second warm: exit %d: %s", code, stderr)
	}
	if gets := r.srv.Stats().Gets; gets != 0 {
		t.Fatalf("a rerun of warm made %d GETs, want 0", gets)
	}

	// After dropping one file, a rerun fetches only that file.
	if code, stderr := runCLI(t, testEnv(), "cache", "drop", "--cache-dir", cacheDir, shard); code != 0 {
		t.Fatalf("cache drop: %s", stderr)
	}
	r.srv.ResetStats()
	if code, stderr := warm(); code != 0 {
		t.Fatalf("resumed warm: exit %d: %s", code, stderr)
	}
	size := int64(len(sourceBytes(t, shard)))
	if gets, want := r.srv.GetsFor(bucket, shard), (size+1<<20-1)>>20; gets != want || r.srv.Stats().Gets != want {
		t.Fatalf("resumed warm made %d GETs for %s (%d in all), want %d, all for it", gets, shard, r.srv.Stats().Gets, want)
	}

	// A wrong sha256 fails, names the file and drops its blocks.
	bad := "--sha256=" + shard + "=" + strings.Repeat("0", 64)
	code, stderr := warm(bad)
	if code == 0 || !strings.Contains(stderr, "checksum mismatch") || !strings.Contains(stderr, shard) {
		t.Fatalf("warm with a wrong sha256: exit %d, %q", code, stderr)
	}
	r.srv.ResetStats()
	if code, stderr := warm(); code != 0 {
		t.Fatalf("warm after a mismatch: %s", stderr)
	}
	if gets := r.srv.GetsFor(bucket, shard); gets == 0 {
		t.Fatal("the mismatched file's blocks were not dropped")
	}

	// The same through a sha256sum-style manifest.
	manifest := filepath.Join(t.TempDir(), "SHA256SUMS")
	os.WriteFile(manifest, []byte(strings.Repeat("1", 64)+"  "+shard+"\n"), 0o644)
	if code, stderr := warm("--sha256-file", manifest); code == 0 || !strings.Contains(stderr, shard) {
		t.Fatalf("warm with a wrong sha256 in --sha256-file: exit %d, %q", code, stderr)
	}
	os.WriteFile(manifest, []byte("# sums\n"+hexSum(sourceBytes(t, shard))+" *"+shard+"\n"), 0o644)
	if code, stderr := warm("--sha256-file", manifest); code != 0 {
		t.Fatalf("warm with a right --sha256-file: exit %d, %q", code, stderr)
	}

	// Bad flags get one-line errors.
	for _, tc := range []struct{ flag, mentions string }{
		{"--sha256=nohash", "NAME="},
		{"--sha256=missing.bin=" + strings.Repeat("a", 64), "no such file"},
		{"--sha256-file=/nonexistent/SUMS", "--sha256-file"},
	} {
		code, stderr := warm(tc.flag)
		if code == 0 || !strings.Contains(stderr, tc.mentions) {
			t.Errorf("warm %s: exit %d, %q; want an error mentioning %q", tc.flag, code, stderr, tc.mentions)
		}
	}
	if code, stderr := runCLI(t, testEnv(), append(append([]string{"warm"}, r.mountArgs()...), "s3://"+bucket)...); code == 0 || !strings.Contains(stderr, "--cache-dir") {
		t.Errorf("warm without --cache-dir: exit %d, %q", code, stderr)
	}
}

// A mount on a warmed cache dir makes no GETs.
func TestMountAfterWarmFetchesNothing(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	if code, stderr := runCLI(t, testEnv(), append(append([]string{"warm"}, r.mountArgs()...), "--cache-dir", cacheDir, "s3://"+bucket)...); code != 0 {
		t.Fatalf("warm: %s", stderr)
	}
	r.srv.ResetStats()
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--cache-dir", cacheDir)...)
	readModel(t, m)
	if gets := r.srv.Stats().Gets; gets != 0 {
		t.Fatalf("a mount after warm made %d GETs", gets)
	}
}

// Files the store keeps a whole-object checksum for are verified by warm.
func TestWarmVerifiesStoreChecksums(t *testing.T) {
	r := newRemote(t)
	r.srv.CreateBucket(bucket)
	body := bytes.Repeat([]byte("modelfs checksum "), 100000)
	out, err := r.client.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("w.bin"), Body: bytes.NewReader(body),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
	})
	if err != nil {
		t.Fatal(err)
	}
	warm := func() (int, string) {
		return runCLI(t, testEnv(), append(append([]string{"warm"}, r.mountArgs()...), "--cache-dir", t.TempDir(), "s3://"+bucket)...)
	}
	if code, stderr := warm(); code != 0 {
		t.Fatalf("warm of an object with a good checksum: %s", stderr)
	}
	// The store now claims another checksum: warm must notice.
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodHead || !strings.HasSuffix(req.URL.Path, "/w.bin") {
			return false
		}
		h := w.Header()
		h.Set("Content-Length", strconv.Itoa(len(body)))
		h.Set("ETag", aws.ToString(out.ETag))
		h.Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		h.Set("x-amz-checksum-sha256", base64.StdEncoding.EncodeToString(make([]byte, 32)))
		h.Set("x-amz-checksum-type", "FULL_OBJECT")
		w.WriteHeader(http.StatusOK)
		return true
	})
	defer r.srv.SetHook(nil)
	code, stderr := warm()
	if code == 0 || !strings.Contains(stderr, "checksum mismatch") || !strings.Contains(stderr, "w.bin") {
		t.Fatalf("warm with a wrong store checksum: exit %d, %q", code, stderr)
	}
}
