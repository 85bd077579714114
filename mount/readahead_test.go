package mount

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/modelfs/modelfs/mount/config"
	"golang.org/x/sys/unix"
)

// A new mount on a disk cache that holds the whole model has the kernel
// read the cache files into its page cache in plan order before any
// reader comes: they were written with direct I/O, so nothing of them is
// resident, and a passthrough mmap reader would otherwise read the disk a
// few pages per fault.
func TestCompleteCacheFilesAreReadAheadAtStart(t *testing.T) {
	dir, cacheDir := t.TempDir(), t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(cacheDir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("skipping: the temporary directory is on tmpfs, whose files are always resident")
	}
	writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 8, 64<<10) // 4 MiB of tensors
	withCache := func(c *config.Config) { c.CacheDir = cacheDir }

	first := newTestEngine(t, dir, withCache)
	readAll(t, fileByPath(t, first.Files(), "model.safetensors"), 1<<20)
	var data string
	waitFor(t, "the model to be complete and verified on disk", func() bool {
		b, ok := first.pf.objs["model.safetensors"].Backing()
		if ok {
			data = b.File.Name()
			b.Close()
		}
		return ok
	})
	first.Close()
	evict(t, data)
	if n, all := resident(t, data); n > all/4 {
		t.Fatalf("%d of %d pages of the cache file still resident after evicting it", n, all)
	}

	second := newTestEngine(t, dir, withCache)
	if n, all := resident(t, data); n > all/4 {
		t.Fatalf("%d of %d pages of the cache file resident before prefetch started", n, all)
	}
	second.StartPrefetch(t.Context())
	waitFor(t, "the cache file to be read ahead", func() bool {
		n, all := resident(t, data)
		return n == all
	})
}

// evict writes back and drops path's pages from the page cache.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// resident counts the pages of path in the page cache (mincore), of all.
func resident(t *testing.T, path string) (n, all int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(data)
	ps := os.Getpagesize()
	vec := make([]byte, (len(data)+ps-1)/ps)
	// x/sys has no Mincore wrapper on Linux.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal("mincore:", errno)
	}
	for _, v := range vec {
		if v&1 != 0 {
			n++
		}
	}
	return n, len(vec)
}
