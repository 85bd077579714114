package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// After an object is replaced or deleted under a mount, reads of blocks
// not yet cached fail with EIO and a log line naming object and offset;
// what was read is only ever the old version.
func TestChangedObjectFailsWithEIO(t *testing.T) {
	for _, change := range []string{"replaced", "deleted"} {
		t.Run(change, func(t *testing.T) {
			r := newRemote(t)
			r.uploadModel(t, "")
			m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--prefetch", "off", "--block-size", "1MiB", "--retries", "2")...)
			name := biggest(t)
			old := sourceBytes(t, name)
			f, err := os.Open(m.path(name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			head := make([]byte, 4096)
			if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, old[:4096]) {
				t.Fatalf("first read: %v (or wrong bytes)", err)
			}

			switch change {
			case "replaced":
				changed := bytes.Clone(old)
				for i := range changed {
					changed[i] ^= 0xff
				}
				if _, err := r.srv.PutObject(bucket, name, changed); err != nil {
					t.Fatal(err)
				}
			case "deleted":
				if err := r.srv.DeleteObject(bucket, name); err != nil {
					t.Fatal(err)
				}
			}

			off := int64(len(old)) - 3<<20 // a block nobody has read
			buf := make([]byte, 64<<10)
			n, err := f.ReadAt(buf, off)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read of an uncached block after the object was %s: %d bytes, %v; want EIO", change, n, err)
			}
			// Never a byte of the new version: whatever did come back is the old one.
			whole, _ := os.ReadFile(m.path(name))
			if !bytes.Equal(whole, old[:len(whole)]) {
				t.Fatal("bytes of two versions mixed")
			}
			if !loggedFailure(m.Log(), name, off) {
				t.Fatalf("no log line naming %s and a range holding offset %d:\n%s", name, off, m.Log())
			}
		})
	}
}

// A new mount sees the new version.
func TestNewMountSeesNewVersion(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	name := model.Files[0]
	fresh := []byte("a new version of this file")
	if _, err := r.srv.PutObject(bucket, name, fresh); err != nil {
		t.Fatal(err)
	}
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	got, err := os.ReadFile(m.path(name))
	if err != nil || !bytes.Equal(got, fresh) {
		t.Fatalf("read %q, %v; want the new version", got, err)
	}
}

// loggedFailure reports whether a "read failed" line names file and a
// kernel request (offset, size) that covers off.
func loggedFailure(logs, file string, off int64) bool {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "read failed") || !strings.Contains(line, "file="+file) {
			continue
		}
		var o, n int64
		i := strings.Index(line, "offset=")
		if i < 0 {
			continue
		}
		if _, err := fmt.Sscanf(line[i:], "offset=%d size=%d", &o, &n); err == nil && o <= off && off < o+n {
			return true
		}
	}
	return false
}

// When the store fails every GET, reads fail with EIO once the retry
// budget is spent, and the mount serves correct bytes once the store
// recovers.
func TestMountRecoversAfterStoreOutage(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--prefetch", "off", "--retries", "2")...)
	var failed atomic.Int32
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet {
			return false
		}
		failed.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `<Error><Code>InternalError</Code><Message>down</Message></Error>`)
		return true
	})
	name := biggest(t)
	f, err := os.Open(m.path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 4096), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read during the outage: %v, want EIO", err)
	}
	if n := failed.Load(); n < 2 {
		t.Fatalf("%d GETs during the outage, want the retry budget (2) spent", n)
	}
	r.srv.SetHook(nil)
	if got, want := sha256File(t, m.path(name)), hexSum(sourceBytes(t, name)); got != want {
		t.Fatal("wrong bytes after the store recovered")
	}
}

// versionedFile is one HTTP file whose content, Last-Modified and ETag a
// test can change; with ignorePreconditions it serves whatever it holds,
// as naive servers and some proxies do.
type versionedFile struct {
	mu                  sync.Mutex
	data                []byte
	mod                 time.Time
	etag                string
	ignorePreconditions bool
}

func (v *versionedFile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	data, mod, etag := v.data, v.mod, v.etag
	v.mu.Unlock()
	if v.ignorePreconditions {
		for _, h := range []string{"If-Match", "If-None-Match", "If-Unmodified-Since", "If-Modified-Since", "If-Range"} {
			r.Header.Del(h)
		}
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	http.ServeContent(w, r, "", mod, bytes.NewReader(data))
}

func (v *versionedFile) change(etag string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	changed := bytes.Clone(v.data)
	for i := range changed {
		changed[i] ^= 0xff
	}
	v.data, v.mod, v.etag = changed, v.mod.Add(time.Second), etag
}

// An HTTP file pinned by Last-Modified alone, or by a weak ETag and
// Last-Modified, that changes between two ranged GETs fails the second
// read with EIO, even from a server that ignores preconditions: bytes of
// two versions never mix.
func TestChangedHTTPObjectFailsWithEIO(t *testing.T) {
	data := make([]byte, 24<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	mod := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name               string
		etag, changedETag  string
		ignorePrecondition bool
	}{
		{"last-modified", "", "", false},
		{"last-modified/naive server", "", "", true},
		{"weak etag/naive server", `W/"1"`, `W/"2"`, true},
		// A weak tag may stay while the bytes change: the date must tell.
		{"same weak etag/naive server", `W/"1"`, `W/"1"`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := &versionedFile{data: data, mod: mod, etag: c.etag, ignorePreconditions: c.ignorePrecondition}
			srv := httptest.NewServer(v)
			defer srv.Close()
			m := startMount(t, srv.URL+"/w.bin", "--prefetch", "off", "--block-size", "1MiB", "--retries", "2")
			f, err := os.Open(m.path("w.bin"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			head := make([]byte, 4096)
			if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, data[:4096]) {
				t.Fatalf("first read: %v (or wrong bytes)", err)
			}
			v.change(c.changedETag)
			off := int64(20 << 20)
			n, err := f.ReadAt(make([]byte, 64<<10), off)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read at 20 MiB after the file changed: %d bytes, %v; want EIO", n, err)
			}
			whole, _ := os.ReadFile(m.path("w.bin"))
			if !bytes.Equal(whole, data[:len(whole)]) {
				t.Fatal("bytes of two versions mixed")
			}
			if !loggedFailure(m.Log(), "w.bin", off) {
				t.Fatalf("no log line naming w.bin and offset %d:\n%s", off, m.Log())
			}
		})
	}
}

// A file served with neither ETag nor Last-Modified cannot be pinned: in a
// directory it is left out with a warning, alone it is a one-line error.
func TestHTTPObjectWithoutValidatorsRefused(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/d/pinned.bin", &versionedFile{data: []byte("pinned"), mod: time.Unix(1714564800, 0)})
	mux.Handle("/d/bare.bin", &versionedFile{data: []byte("no validators")})
	mux.Handle("/d/weak.bin", &versionedFile{data: []byte("weak etag only"), etag: `W/"1"`})
	mux.Handle("/d/modelfs.json", &versionedFile{data: []byte(`["pinned.bin", "bare.bin", "weak.bin"]`)})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	m := startMount(t, srv.URL+"/d/")
	if got := dirNames(t, m.dir); len(got) != 1 || got[0] != "pinned.bin" {
		t.Fatalf("mount shows %q, want pinned.bin alone", got)
	}
	m.stop(t)
	for _, name := range []string{"bare.bin", "weak.bin"} {
		if !strings.Contains(m.Log(), `key="\"`+name+`\""`) {
			t.Errorf("no warning naming %s:\n%s", name, m.Log())
		}
	}

	code, stderr := runCLI(t, testEnv(), "mount", srv.URL+"/d/bare.bin", t.TempDir())
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	if code == 0 || !strings.Contains(last, "bare.bin") || !strings.Contains(last, "no ETag or Last-Modified") {
		t.Fatalf("mount of a bare file: exit %d, last line %q; want an error naming the file and why", code, last)
	}
}
