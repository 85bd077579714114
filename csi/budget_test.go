package csi

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The auto budget counts what the cache already holds, so it does not
// shrink each time the plugin restarts over a fuller cache.
func TestAutoCacheSizeCountsTheCache(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "blocks", "ab"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Sparse: counted at its size, yet taking no space from other tests.
	f, err := os.Create(filepath.Join(dir, "blocks", "ab", "0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := autoCacheSize(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	// Free space moves with other writers; the cache's 100 GiB dwarfs that.
	if want := (free + 100<<30) / 5 * 4; got < want-(1<<30) || got > want+(1<<30) {
		t.Fatalf("auto cache size %d; free %d, want about 80%% of free + 100GiB (%d)", got, free, want)
	}
	if _, err := autoCacheSize(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("no error for a missing cache dir")
	}
}
