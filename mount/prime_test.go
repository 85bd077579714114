package mount

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/mount/config"
)

// A complete cache file handed to passthrough is filled into the page
// cache in the background, without any read of it through the mount.
func TestPassthroughFileIsPrimed(t *testing.T) {
	dir := t.TempDir()
	model := writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 4, 64<<10) // 2 MiB of tensors
	cache := t.TempDir()
	e := newTestEngine(t, dir, func(c *config.Config) { c.Prefetch, c.CacheDir = config.PrefetchReadahead, cache })
	f := fileByPath(t, e.Files(), "model.safetensors")
	if got := readAll(t, f, 1<<20); len(got) != len(model) {
		t.Fatalf("read %d bytes, want %d", len(got), len(model))
	}
	data := cacheDataFile(t, cache)
	waitFor(t, "the object to be complete on disk", func() bool {
		return f.Content.(*streamOpener).obj.CompleteOnDisk()
	})
	drop(t, data)
	if r := resident(t, data); r == 1 {
		t.Skipf("the page cache of %s cannot be dropped on this filesystem: nothing to prime", data)
	}
	h := f.Content.Open()
	defer h.Release()
	if _, ok := h.(fs.Passthrougher); !ok {
		t.Fatal("the complete object was not handed out for passthrough")
	}
	waitFor(t, "the cache file to be resident", func() bool { return resident(t, data) == 1 })
}

// cacheDataFile returns the one object data file under a cache dir.
func cacheDataFile(t *testing.T, cache string) string {
	t.Helper()
	var found []string
	filepath.WalkDir(cache, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "data" && d.Type().IsRegular() {
			found = append(found, path)
		}
		return nil
	})
	if len(found) != 1 {
		t.Fatalf("data files under %s: %v, want one", cache, found)
	}
	return found[0]
}

// drop writes back and drops the page cache of the file at path.
func drop(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// resident returns the share of the file at path in the page cache.
func resident(t *testing.T, path string) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		t.Fatalf("stat %s: %v, size %d", path, err, st.Size())
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore %s: %v", path, e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n) / float64(len(vec))
}
