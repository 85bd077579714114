package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfs/modelfs/tests/mountproc"
)

// backedContent serves data from memory and, once complete is set, offers
// the kernel a local file holding the same bytes, as a file complete in the
// disk cache does.
type backedContent struct {
	data     []byte
	backing  string
	complete atomic.Bool
	reads    atomic.Int64
	// releases counts Handle releases: the kernel sends RELEASE after
	// close(2) returns, so an open right after a close may still find
	// the closed one counted.
	releases atomic.Int64
}

func (c *backedContent) Open() Handle {
	h := &memHandle{c: c}
	if !c.complete.Load() {
		return h
	}
	return &backedHandle{memHandle: h, c: c}
}

type memHandle struct{ c *backedContent }

func (h *memHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	h.c.reads.Add(1)
	if off >= int64(len(h.c.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.c.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *memHandle) Release() { h.c.releases.Add(1) }

type backedHandle struct {
	*memHandle
	c *backedContent
	f *os.File
}

func (h *backedHandle) PassthroughFd() (int, bool) {
	f, err := os.Open(h.c.backing)
	if err != nil {
		return 0, false
	}
	h.f = f
	return int(f.Fd()), true
}

func (h *backedHandle) Release() {
	if h.f != nil {
		h.f.Close()
	}
	h.memHandle.Release()
}

// waitReleased waits until n Handles were released.
func (c *backedContent) waitReleased(t *testing.T, n int64) {
	t.Helper()
	mountproc.WaitFor(t, "the kernel to release the closed opens", 10*time.Second, func() bool { return c.releases.Load() >= n })
}

// mountBacked mounts one file of size bytes named "model.bin".
func mountBacked(t *testing.T, size int) (*Server, *backedContent, string) {
	t.Helper()
	mountproc.SkipWithoutPassthrough(t)
	data := make([]byte, size)
	rand.Read(data)
	dir := t.TempDir()
	c := &backedContent{data: data, backing: filepath.Join(dir, "backing")}
	if err := os.WriteFile(c.backing, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	// The kernel's default readahead, so that a small read stays small.
	srv, err := Mount(mp, Options{Files: []File{{Path: "model.bin", Size: int64(size), Content: c}}, ReadAheadKB: 128})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return srv, c, filepath.Join(mp, "model.bin")
}

// The kernel fails an open with EIO when the file is open through its page
// cache too: while such an open is live, a new one goes through the page
// cache as well, and the first open after it is handed the backing file.
func TestNoPassthroughBesideACachedOpen(t *testing.T) {
	srv, c, path := mountBacked(t, 4<<20)
	cached, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cached.Close()
	head := make([]byte, 4096)
	if _, err := cached.ReadAt(head, 0); err != nil || !bytes.Equal(head, c.data[:4096]) {
		t.Fatalf("header read: %v", err)
	}
	c.complete.Store(true)
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, c.data) {
		t.Fatalf("read beside a cached open: %d bytes, %v", len(got), err)
	}
	if n := srv.Stats.PassthroughOpens.Load(); n != 0 {
		t.Fatalf("%d opens passed through beside a cached open", n)
	}
	cached.Close()
	c.waitReleased(t, 2)
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, c.data) {
		t.Fatalf("read after the cached open closed: %d bytes, %v", len(got), err)
	}
	if n := srv.Stats.PassthroughOpens.Load(); n != 1 {
		t.Fatalf("%d opens passed through once no cached open was left, want 1", n)
	}
}

// A file the kernel holds only a piece of is handed the backing file once
// that is complete, and later reads never reach the file system.
func TestPartlyReadFileIsPassedThrough(t *testing.T) {
	srv, c, path := mountBacked(t, 16<<20)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4096)
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, c.data[:4096]) {
		t.Fatalf("header read: %v", err)
	}
	f.Close()
	c.waitReleased(t, 1)
	c.complete.Store(true)
	reads := c.reads.Load()
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, c.data) {
		t.Fatalf("whole read: %d bytes, %v", len(got), err)
	}
	if n := srv.Stats.PassthroughOpens.Load(); n != 1 {
		t.Fatalf("%d opens passed through, want 1", n)
	}
	if n := c.reads.Load() - reads; n != 0 {
		t.Fatalf("%d reads reached the file system through a passthrough open", n)
	}
}

// close(2) sends the file system a FLUSH and waits for its answer: a
// read-only file has nothing to flush, so the first is answered ENOSYS,
// which tells the kernel to send no more on this mount; every close
// succeeds.
func TestCloseSendsNoFlushAfterTheFirst(t *testing.T) {
	mountproc.SkipWithoutFuse(t)
	c := &backedContent{data: []byte("{}")}
	mp := t.TempDir()
	srv, err := Mount(mp, Options{Files: []File{{Path: "a.json", Size: 2, Content: c}, {Path: "b.json", Size: 2, Content: c}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	})
	for i := range 6 {
		f, err := os.Open(filepath.Join(mp, []string{"a.json", "b.json"}[i%2]))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
	if n := srv.Stats.flushes.Load(); n != 1 {
		t.Fatalf("%d FLUSH requests for six closes, want 1", n)
	}
}
