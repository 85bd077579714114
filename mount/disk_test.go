package mount

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/modelfs/modelfs/blockcache"
)

func TestAutoDiskCache(t *testing.T) {
	for _, c := range []struct{ held, free, total, want int64 }{
		{0, 100, 200, 80},
		{50, 0, 200, 50},    // a full cache keeps what it holds
		{50, 100, 200, 130}, // held counts on top of free
		{150, 50, 160, 160}, // never more than the filesystem
	} {
		if got := autoDiskCache(c.held, c.free, c.total); got != c.want {
			t.Errorf("autoDiskCache(held %d, free %d, total %d) = %d, want %d", c.held, c.free, c.total, got, c.want)
		}
	}
}

// A new mount on a cache that filled its filesystem must not size the
// cache below what it holds (which would evict every other mount's blocks).
func TestAutoDiskCacheOnFullCacheKeepsItsBlocks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	const bs, blocks = 64 << 10, 40
	c := blockcache.New(blockcache.Options{BlockSize: bs, MemBytes: 1 << 20, Workers: 1,
		Disk: &blockcache.DiskOptions{Dir: dir, MaxBytes: 1 << 30}}, zeroLoader{})
	id := blockcache.ObjectID{Source: "test", Name: "w.bin", Version: "1", Size: blocks * bs}
	for i := range int64(blocks) {
		if _, err := c.Fill(context.Background(), id, i); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	// Fill what is left of the filesystem.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	filler.Write(make([]byte, 8<<20)) // ENOSPC is the point
	filler.Close()

	held, err := blockcache.HeldBytes(dir, nil)
	if err != nil || held != blocks*bs {
		t.Fatalf("HeldBytes = %d, %v; want %d", held, err, blocks*bs)
	}
	if got := defaultDiskCache(dir, slog.Default()); got < held {
		t.Fatalf("auto cache size on a full cache is %d, below the %d bytes it holds", got, held)
	}
}

type zeroLoader struct{}

func (zeroLoader) LoadBlock(_ context.Context, _ blockcache.ObjectID, _ int64, p []byte) error {
	clear(p)
	return nil
}
