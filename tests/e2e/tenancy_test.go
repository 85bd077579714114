package e2e

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Tests of a disk cache shared by several tenants' mounts on one node:
// cached bytes must never be served for another source than the one they
// came from, nor to a mount that could not read the source itself.

// randomBytes returns n bytes that differ per seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readAll reads a file through a mount.
func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return b
}

// Two directories hold a w.bin of the same size and mtime: the second's
// mount on the first's cache dir must serve its own bytes, not the
// first's cached ones.
func TestCacheDoesNotCrossLocalSources(t *testing.T) {
	const size = 3<<20 + 17
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	var dirs [2]string
	var want [2][]byte
	for i := range dirs {
		dirs[i] = t.TempDir()
		want[i] = randomBytes(size, uint64(i+1))
		p := filepath.Join(dirs[i], "w.bin")
		if err := os.WriteFile(p, want[i], 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	cacheDir := t.TempDir()
	for i, dir := range dirs {
		m := startMount(t, "file://"+dir, "--cache-dir", cacheDir, "--block-size", "1MiB")
		got := readAll(t, m.path("w.bin"))
		m.stop(t)
		if !bytes.Equal(got, want[i]) {
			t.Fatalf("mount of source %d served other bytes than its w.bin (another source's cached blocks)", i)
		}
	}
}

// An HTTP server answering with the ETag of a victim's S3 object must not
// plant bytes that the victim's s3:// mount on the same cache dir serves,
// through FUSE or through passthrough of a complete cache file.
func TestCacheDoesNotCrossSchemes(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	const name = "w.bin"
	const size = 2<<20 + 5
	victim := randomBytes(size, 7)
	ctx := context.Background()
	if _, err := r.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(name), Body: bytes.NewReader(victim)}); err != nil {
		t.Fatal(err)
	}
	head, err := r.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	planted := randomBytes(size, 8)
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("ETag", aws.ToString(head.ETag))
		http.ServeContent(w, req, name, time.Time{}, bytes.NewReader(planted))
	}))
	defer attacker.Close()

	cacheDir := t.TempDir()
	cache := []string{"--cache-dir", cacheDir, "--block-size", "1MiB"}
	m := startMount(t, attacker.URL+"/"+name, cache...)
	if got := readAll(t, m.path(name)); !bytes.Equal(got, planted) {
		t.Fatal("the HTTP mount did not serve its own server's bytes")
	}
	m.stop(t)

	// Twice: the second mount finds the object complete on disk, which is
	// when passthrough would hand the kernel the cache file.
	for range 2 {
		m = startMount(t, "s3://"+bucket, append(r.mountArgs(), cache...)...)
		got := readAll(t, m.path(name))
		m.stop(t)
		if !bytes.Equal(got, victim) {
			t.Fatalf("the s3 mount served bytes planted by another source (planted: %v)", bytes.Equal(got, planted))
		}
	}
}

// Cached weights are private to the cache's owner: files 0600, directories
// 0700, even when the mount runs with a umask of 0.
func TestCacheDirIsPrivate(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := filepath.Join(t.TempDir(), "cache")
	old := syscall.Umask(0)
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--cache-dir", cacheDir, "--block-size", "1MiB")...)
	syscall.Umask(old)
	readModel(t, m)
	m.stop(t) // waits for the background verifications, which write stamps

	seen := map[string]bool{}
	err := filepath.Walk(cacheDir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		seen[info.Name()] = true
		if filepath.Base(filepath.Dir(path)) == "listings" {
			seen["listing"] = true
		}
		want := os.FileMode(0o600)
		if info.IsDir() {
			want = os.ModeDir | 0o700
		}
		if info.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, info.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cache", "v1", "lock", "data", "meta", "pin", "verified", "listings", "listing"} {
		if !seen[name] {
			t.Errorf("no %q in the cache dir: the test checks nothing of it", name)
		}
	}
}

// A mount must prove it can read the source with its own credentials
// before it serves cached bytes. Another tenant's mount filled the cache
// dir (blocks and saved listing); mounts of the same source with wrong,
// anonymous or missing credentials serve none of those bytes.
func TestRefusedCredentialsServeNoCachedByte(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	args := append(r.mountArgs(), "--cache-dir", cacheDir, "--retries", "2")
	victim := startMount(t, "s3://"+bucket, args...)
	readModel(t, victim)
	victim.stop(t)

	// An endpoint where nothing listens: a credential chain that asks the
	// instance metadata service there fails with a network error.
	closed := closedEndpoint(t)
	base := []string{"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "HOME=" + t.TempDir()}
	var clean []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			clean = append(clean, kv)
		}
	}
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"wrong secret", []string{"AWS_ACCESS_KEY_ID=" + accessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret", "AWS_EC2_METADATA_DISABLED=true"}, nil},
		{"unknown key", []string{"AWS_ACCESS_KEY_ID=AKIAOTHERTENANT00001", "AWS_SECRET_ACCESS_KEY=" + secretKey, "AWS_EC2_METADATA_DISABLED=true"}, nil},
		{"anonymous", nil, []string{"--no-sign-request"}},
		{"no credentials", []string{"AWS_EC2_METADATA_DISABLED=true"}, nil},
		{"metadata service unreachable", []string{"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + closed}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := append(append(append([]string(nil), clean...), base...), c.env...)
			m, err := tryMount(t, env, "s3://"+bucket, append(append([]string(nil), args...), c.args...)...)
			if m == nil {
				stderr := exitLog(t, err)
				if strings.Contains(stderr, secretKey) || strings.Contains(stderr, "wrong-secret") {
					t.Fatalf("a secret reached the error:\n%s", stderr)
				}
				return // refused at mount time: nothing served
			}
			for _, name := range model.Files {
				if b, err := os.ReadFile(m.path(name)); err == nil || len(b) > 0 {
					t.Errorf("%s: a mount with refused credentials served %d cached bytes (err %v)", name, len(b), err)
				}
			}
			t.Errorf("the mount started on the saved listing:\n%s", m.Log())
		})
	}
}

// The same for HTTP: a wrong or missing bearer token is refused (401) and
// the mount serves nothing another tenant's mount cached.
func TestRefusedHTTPTokenServesNoCachedByte(t *testing.T) {
	const token = "tenant-a-token-0123456789"
	files := http.FileServer(http.Dir(modelDir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	cacheDir := t.TempDir()
	args := []string{"--cache-dir", cacheDir, "--retries", "2"}
	t.Setenv("MODELFS_HTTP_TOKEN", token)
	victim := startMount(t, srv.URL+"/", args...)
	readModel(t, victim)
	victim.stop(t)

	for _, tok := range []string{"wrong-token-0123456789", ""} {
		env := append(testEnv(), "MODELFS_HTTP_TOKEN="+tok)
		m, err := tryMount(t, env, srv.URL+"/", args...)
		if m != nil {
			for _, name := range model.Files {
				if b, err := os.ReadFile(m.path(name)); err == nil || len(b) > 0 {
					t.Errorf("%s: a mount with a refused token served %d cached bytes", name, len(b))
				}
			}
			t.Fatalf("a mount with token %q started:\n%s", tok, m.Log())
		}
		if stderr := exitLog(t, err); tok != "" && strings.Contains(stderr, tok) {
			t.Fatalf("the token reached the error:\n%s", stderr)
		}
	}
}

// closedEndpoint returns a loopback URL where nothing listens.
func closedEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// The saved listing is the source's own: a mount of the same bucket name
// through another endpoint, one that cannot be reached, must not start on
// the victim's listing and serve its cached bytes.
func TestSavedListingIsPerSource(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	victim := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--cache-dir", cacheDir)...)
	readModel(t, victim)
	victim.stop(t)

	m, err := tryMount(t, testEnv(), "s3://"+bucket, "--endpoint", closedEndpoint(t), "--region", region,
		"--cache-dir", cacheDir, "--retries", "1")
	if m != nil {
		for _, name := range model.Files {
			if b, err := os.ReadFile(m.path(name)); err == nil || len(b) > 0 {
				t.Errorf("%s: a mount of another endpoint served %d of the victim's cached bytes", name, len(b))
			}
		}
		t.Fatalf("a mount of an unreachable endpoint started on another source's saved listing:\n%s", m.Log())
	}
	if stderr := exitLog(t, err); !strings.Contains(stderr, "listing") {
		t.Fatalf("the failed mount does not say why:\n%s", stderr)
	}
}

// An absurd entry in a cache dir (a header claiming 2^62 bytes) once
// crashed every mount and cache command on that dir: now it is dropped
// with a log line and everything works.
func TestAbsurdCacheEntryCrashesNothing(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	obj := filepath.Join(cacheDir, "v1", "0123456789abcdef0123456789abcdef")
	if err := os.MkdirAll(obj, 0o700); err != nil {
		t.Fatal(err)
	}
	meta := []byte("modelfs-cache v1\n" + `{"source":"x","name":"huge.bin","version":"e:1","size":4611686018427387904,"block_size":65536}` + "\n")
	if err := os.WriteFile(filepath.Join(obj, "meta"), append(meta, make([]byte, 4096-len(meta))...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(obj, "data"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr := runCLI(t, testEnv(), "cache", "ls", "--cache-dir", cacheDir)
	if code != 0 || !strings.Contains(stderr, "bad metadata") {
		t.Fatalf("cache ls on a dir with an absurd entry: exit %d\n%s", code, stderr)
	}
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--cache-dir", cacheDir)...)
	readModel(t, m)
}
