package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelfs/modelfs/tests/s3server"
)

// verifyKinds are the checksums a store may keep for an object, each
// tried on an intact object and on one damaged on the store's disk.
var verifyKinds = []struct {
	name      string
	opts      s3server.PutOptions
	multipart bool
}{
	{"crc64nvme", s3server.PutOptions{}, false}, // S3's default
	{"crc32c", s3server.PutOptions{Checksum: "CRC32C"}, false},
	{"crc32", s3server.PutOptions{Checksum: "CRC32"}, false},
	{"sha1", s3server.PutOptions{Checksum: "SHA1"}, false},
	{"sha256", s3server.PutOptions{Checksum: "SHA256"}, false},
	{"md5-etag", s3server.PutOptions{NoChecksum: true}, false},      // single-part ETag only
	{"multipart-etag", s3server.PutOptions{NoChecksum: true}, true}, // parts of uneven sizes
	{"composite-crc32c", s3server.PutOptions{Checksum: "CRC32C", Composite: true}, true},
	{"composite-sha256", s3server.PutOptions{Checksum: "SHA256", Composite: true}, true},
}

// verifyObjectSize spans several 1 MiB blocks and ends inside one.
const verifyObjectSize = 3<<20 + 12345

// putVerifyObjects stores, for each kind, intact/KIND.bin and
// damaged/KIND.bin (one byte flipped on the server's disk after the put,
// metadata unchanged), plus intact/bare.bin with no checksum and an
// SSE-KMS ETag. It returns the intact objects' bytes by key.
func putVerifyObjects(t *testing.T, r *remote) map[string][]byte {
	t.Helper()
	if err := r.srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	intact := map[string][]byte{}
	put := func(key string, data []byte, opts s3server.PutOptions, multipart bool) {
		var err error
		if multipart {
			_, err = r.srv.PutMultipartWith(bucket, key, [][]byte{data[:1<<20+100], data[1<<20+100 : 2<<20+5000], data[2<<20+5000:]}, opts)
		} else {
			_, err = r.srv.PutObjectWith(bucket, key, data, opts)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range verifyKinds {
		rng := rand.NewChaCha8([32]byte{byte(i), 'v'})
		data := make([]byte, verifyObjectSize)
		rng.Read(data)
		put("intact/"+k.name+".bin", data, k.opts, k.multipart)
		put("damaged/"+k.name+".bin", data, k.opts, k.multipart)
		if err := r.srv.DamageObject(bucket, "damaged/"+k.name+".bin", verifyObjectSize/2); err != nil {
			t.Fatal(err)
		}
		intact["intact/"+k.name+".bin"] = data
	}
	bare := bytes.Repeat([]byte("bare"), 1000)
	put("intact/bare.bin", bare, s3server.PutOptions{NoChecksum: true, SSEKMS: true}, false)
	intact["intact/bare.bin"] = bare
	return intact
}

// Through a fresh mount, a damaged object read to its end fails with EIO
// (never a clean EOF), and so does every read after; the intact object
// next to it reads clean; stats show each file's state.
func TestVerifyMountFailsDamagedObjects(t *testing.T) {
	t.Run("ram", func(t *testing.T) { testVerifyMount(t) })
	// With a disk cache, ordered checks read blocks back from disk too,
	// and intact files may then be passed through.
	t.Run("disk", func(t *testing.T) { testVerifyMount(t, "--cache-dir", t.TempDir(), "--mem-cache", "2MiB") })
	// RAM holds two of an object's four blocks and there is no disk
	// cache: ordered checks hash as the file is read, not at its end.
	t.Run("small-ram", func(t *testing.T) { testVerifyMount(t, "--mem-cache", "2MiB") })
}

func testVerifyMount(t *testing.T, extra ...string) {
	r := newRemote(t)
	intact := putVerifyObjects(t, r)
	m := startMount(t, "s3://"+bucket, append(append(r.mountArgs(), "--block-size", "1MiB", "--metrics-addr", "127.0.0.1:0"), extra...)...)

	for _, k := range verifyKinds {
		name := "damaged/" + k.name + ".bin"
		got, err := os.ReadFile(m.path(name))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s: reading it whole gave %d bytes and %v, want EIO", name, len(got), err)
		}
		f, err := os.Open(m.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadAt(make([]byte, 10), 0); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s: a read after the failure gave %v, want EIO", name, err)
		}
		f.Close()
	}
	for range 2 { // the second time from the page cache, disk or passthrough
		for name, want := range intact {
			got, err := os.ReadFile(m.path(name))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %d bytes, %v; want its %d bytes", name, len(got), err, len(want))
			}
		}
	}

	code, out, stderr := runCLIOutput(t, "stats", "--json", m.dir)
	if code != 0 {
		t.Fatalf("stats: %s", stderr)
	}
	var st struct {
		Files []struct {
			Path   string `json:"path"`
			Verify string `json:"verify"`
		} `json:"files"`
		Cache struct {
			Verified   int64 `json:"verified_files"`
			Unverified int64 `json:"unverified_files"`
			Failures   int64 `json:"verify_failures"`
		} `json:"cache"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	for _, f := range st.Files {
		want := "verified"
		switch {
		case strings.HasPrefix(f.Path, "damaged/"):
			want = "failed"
		case f.Path == "intact/bare.bin":
			want = "unverified"
		}
		if f.Verify != want {
			t.Errorf("stats: %s is %q, want %q", f.Path, f.Verify, want)
		}
	}
	n := int64(len(verifyKinds))
	if c := st.Cache; c.Verified != n || c.Failures != n || c.Unverified != 1 {
		t.Errorf("stats: %d verified, %d failed, %d unverified; want %d, %d, 1", c.Verified, c.Failures, c.Unverified, n, n)
	}
	mf := scrape(t, "http://"+metricsAddr(t, m)+"/metrics")
	for _, k := range verifyKinds {
		if v := sum(mf, "modelfs_verify_failed", map[string]string{"file": "damaged/" + k.name + ".bin"}); v != 1 {
			t.Errorf("modelfs_verify_failed{file=damaged/%s.bin} = %v, want 1", k.name, v)
		}
	}
	if v := sum(mf, "modelfs_verify_failures_total", nil); v != float64(n) {
		t.Errorf("modelfs_verify_failures_total = %v, want %d", v, n)
	}
	if v := sum(mf, "modelfs_verify_unverified_files_total", nil); v != 1 {
		t.Errorf("modelfs_verify_unverified_files_total = %v, want 1", v)
	}
	logs := m.Log()
	for _, k := range verifyKinds {
		if strings.Count(logs, "does not match the store's checksum: its cached blocks are dropped") != len(verifyKinds) ||
			!strings.Contains(logs, "damaged/"+k.name+".bin") {
			t.Fatalf("want one log line naming each damaged file:\n%s", logs)
		}
	}
}

// warm fails naming every damaged file and keeps none of its blocks; the
// intact ones warm clean, bare.bin with a warning, and --require-verified
// fails on it.
func TestVerifyWarm(t *testing.T) {
	r := newRemote(t)
	putVerifyObjects(t, r)
	cacheDir := t.TempDir()
	warm := func(source string, extra ...string) (int, string, string) {
		args := append(append([]string{"warm"}, r.mountArgs()...), "--cache-dir", cacheDir, "--block-size", "1MiB")
		return runCLIOutput(t, append(append(args, extra...), source)...)
	}
	code, _, stderr := warm("s3://" + bucket)
	if code == 0 || !strings.Contains(stderr, "checksum mismatch") {
		t.Fatalf("warm over damaged objects: exit %d, %s", code, stderr)
	}
	for _, k := range verifyKinds {
		if !strings.Contains(stderr, "damaged/"+k.name+".bin") || strings.Contains(stderr, "intact/"+k.name+".bin:") {
			t.Errorf("warm's error should name damaged/%s.bin and not intact/%s.bin: %s", k.name, k.name, stderr)
		}
	}
	if code, out, _ := runCLIOutput(t, "cache", "ls", "--cache-dir", cacheDir); code != 0 || strings.Contains(out, "damaged/") {
		t.Errorf("the damaged files' blocks stayed in the cache:\n%s", out)
	}

	code, out, stderr := warm("s3://" + bucket + "/intact")
	if code != 0 || !strings.Contains(stderr, "file not verified") || !strings.Contains(stderr, "bare.bin") {
		t.Fatalf("warm of the intact files: exit %d, %s", code, stderr)
	}
	if want := fmt.Sprintf("%d verified against the store, 1 unverified", len(verifyKinds)); !strings.Contains(out, want) {
		t.Errorf("warm printed %q, want %q in it", out, want)
	}
	code, _, stderr = warm("s3://"+bucket+"/intact", "--require-verified")
	if code == 0 || !strings.Contains(stderr, "bare.bin") {
		t.Fatalf("warm --require-verified with an unverified file: exit %d, %s", code, stderr)
	}
}

// An HTTP source whose server gives digests: Repr-Digest, and the Hub's
// X-Linked-Etag on a redirect. Damaged files fail through the mount and in
// warm, the intact ones read clean, and one without a digest is unverified.
func TestVerifyHTTPDigests(t *testing.T) {
	type file struct {
		data, served []byte
		hub          bool // behind a redirect carrying X-Linked-Etag
		digest       bool
	}
	rng := rand.NewChaCha8([32]byte{'h'})
	content := func() []byte {
		b := make([]byte, verifyObjectSize)
		rng.Read(b)
		return b
	}
	damage := func(b []byte) []byte {
		d := bytes.Clone(b)
		d[len(d)/2] ^= 1
		return d
	}
	files := map[string]*file{}
	for _, name := range []string{"good.bin", "bad.bin", "hub-good.bin", "hub-bad.bin", "plain.bin"} {
		data := content()
		f := &file{data: data, served: data, hub: strings.HasPrefix(name, "hub-"), digest: name != "plain.bin"}
		if strings.Contains(name, "bad") {
			f.served = damage(data)
		}
		files[name] = f
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "modelfs.json" {
			w.Write([]byte(`["good.bin", "bad.bin", "hub-good.bin", "hub-bad.bin", "plain.bin"]`))
			return
		}
		cdn := strings.HasPrefix(name, "cdn/")
		f := files[strings.TrimPrefix(name, "cdn/")]
		if f == nil {
			http.NotFound(w, r)
			return
		}
		sum := sha256.Sum256(f.data)
		if f.hub && !cdn {
			w.Header().Set("X-Linked-Etag", `"`+hex.EncodeToString(sum[:])+`"`)
			http.Redirect(w, r, "/cdn/"+name, http.StatusFound)
			return
		}
		if f.digest && !f.hub {
			w.Header().Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":")
		}
		w.Header().Set("ETag", `"v1-`+name+`"`)
		http.ServeContent(w, r, name, time.Unix(1700000000, 0), bytes.NewReader(f.served))
	}))
	defer srv.Close()

	// The second time with RAM for two of each file's four blocks, and no
	// disk cache: the sha256 is fed as the file is read.
	for _, extra := range [][]string{nil, {"--mem-cache", "2MiB"}} {
		m := startMount(t, srv.URL+"/", append([]string{"--block-size", "1MiB"}, extra...)...)
		for name, f := range files {
			got, err := os.ReadFile(m.path(name))
			if !bytes.Equal(f.served, f.data) {
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("%v: %s (damaged): %d bytes, %v; want EIO", extra, name, len(got), err)
				}
			} else if err != nil || !bytes.Equal(got, f.data) {
				t.Errorf("%v: %s: %d bytes, %v", extra, name, len(got), err)
			}
		}
		_, out, _ := runCLIOutput(t, "stats", m.dir)
		if !strings.Contains(out, "2 files verified against their store's checksum, 1 unverified (no usable checksum), 2 failed") {
			t.Errorf("%v: stats:\n%s", extra, out)
		}
		m.stop(t)
	}

	code, _, stderr := runCLIOutput(t, "warm", "--cache-dir", t.TempDir(), "--block-size", "1MiB", srv.URL+"/")
	if code == 0 || !strings.Contains(stderr, "bad.bin") || !strings.Contains(stderr, "hub-bad.bin") || strings.Contains(stderr, "good.bin:") {
		t.Errorf("warm: exit %d, %s", code, stderr)
	}
}
