package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
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
			if !loggedFailure(m.stderr.String(), name, off) {
				t.Fatalf("no log line naming %s and a range holding offset %d:\n%s", name, off, m.stderr.String())
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
