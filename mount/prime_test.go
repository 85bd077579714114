package mount

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/mount/config"
	"github.com/modelfs/modelfs/tests/mountproc"
)

// A complete cache file handed to passthrough is filled into the page
// cache in the background, without any read of it through the mount.
func TestPassthroughFileIsPrimed(t *testing.T) {
	h, data := reopenDropped(t, t.TempDir(), 64<<10) // 2 MiB of tensors
	if _, ok := h.(fs.Passthrougher); !ok {
		t.Fatal("the complete object was not handed out for passthrough")
	}
	waitFor(t, "the cache file to be resident", func() bool { return resident(t, data) == 1 })
}

// A passthrough open of a cache file not in the page cache returns once
// the file is filled, so that the loader reads it from memory rather than
// faulting it in from the disk beside the fill.
func TestPassthroughOpenWaitsForTheFill(t *testing.T) {
	_, data := reopenDropped(t, t.TempDir(), 1<<20) // 32 MiB of tensors
	if r := resident(t, data); r != 1 {
		t.Fatalf("the open returned with %.0f%% of the cache file in the page cache, want all", 100*r)
	}
}

// The fill brings a cache file in as large folios, where the filesystem
// has them: a later mapping of the file (a reload, a remount) is then
// mapped 2 MiB at a time rather than faulted in by the page, and the fill
// itself costs less (docs/benchmarks.md). Readahead through a mapping
// otherwise goes by the disk's readahead size, 128 KiB by default.
func TestPrimeFillsInLargeFolios(t *testing.T) {
	cache := t.TempDir()
	if most := writtenFolioPages(t, cache); most < 512 {
		t.Skipf("the filesystem of %s keeps a 4 MiB write in folios of at most %d pages: no 2 MiB folios to fill", cache, most)
	}
	_, data := reopenDropped(t, cache, 1<<20) // 32 MiB of tensors
	waitFor(t, "the cache file to be resident", func() bool { return resident(t, data) == 1 })
	folios, err := mountproc.PageFolios(t, data)
	if err != nil {
		t.Skipf("cannot see the page cache's folios: %v", err)
	}
	// 16 of the file's 2 MiB ranges, and its tail.
	if per := folios.PagesPerFolio(); per < 256 {
		t.Fatalf("the fill left %d pages in %d one-page and %d large folios (%.0f pages per folio), want 2 MiB folios",
			folios.Resident, folios.Single, folios.Large, per)
	}
}

// reopenDropped caches model.safetensors (4 layers of two n-float
// tensors) whole in a disk tier at cache, drops its cache file from the
// page cache and opens the file again, which starts the fill; it returns
// the open handle, released when the test ends, and the cache file.
func reopenDropped(t *testing.T, cache string, n int) (fs.Handle, string) {
	t.Helper()
	dir := t.TempDir()
	model := writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 4, n)
	e := newTestEngine(t, dir, func(c *config.Config) { c.Prefetch, c.CacheDir = config.PrefetchReadahead, cache })
	f := fileByPath(t, e.Files(), "model.safetensors")
	if got := readAll(t, f, 1<<20); len(got) != len(model) {
		t.Fatalf("read %d bytes, want %d", len(got), len(model))
	}
	data := cacheDataFile(t, cache)
	waitFor(t, "the object to be complete on disk", func() bool {
		return f.Content.(*streamOpener).obj.CompleteOnDisk()
	})
	mountproc.DropCache(t, data)
	if r := resident(t, data); r == 1 {
		t.Skipf("the page cache of %s cannot be dropped on this filesystem: nothing to fill", data)
	}
	h := f.Content.Open()
	t.Cleanup(h.Release)
	return h, data
}

// writtenFolioPages writes 4 MiB in one write to a new file in dir and
// returns the pages of the largest folio the filesystem keeps it in.
func writtenFolioPages(t *testing.T, dir string) int {
	t.Helper()
	path := filepath.Join(dir, "probe")
	defer os.Remove(path)
	if err := os.WriteFile(path, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	folios, err := mountproc.PageFolios(t, path)
	if err != nil {
		t.Skipf("cannot see the page cache's folios: %v", err)
	}
	return folios.Largest
}

// Once a mount is idle, the cache files of the complete objects it opened
// are filled into the page cache without another open; a complete object
// it never opened is left alone.
func TestIdleMountFillsTheCacheFilesItOpened(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	opened := writeSafetensors(t, filepath.Join(dir, "a.safetensors"), 4, 64<<10)
	other := writeSafetensors(t, filepath.Join(dir, "b.safetensors"), 6, 64<<10)
	edit := func(c *config.Config) { c.Prefetch, c.CacheDir = config.PrefetchReadahead, cache }
	// A first mount completes both objects on disk.
	first := newTestEngine(t, dir, edit)
	for path, want := range map[string][]byte{"a.safetensors": opened, "b.safetensors": other} {
		f := fileByPath(t, first.Files(), path)
		if got := readAll(t, f, 1<<20); len(got) != len(want) {
			t.Fatalf("%s: read %d bytes, want %d", path, len(got), len(want))
		}
		waitFor(t, path+" to be complete on disk", func() bool {
			return f.Content.(*streamOpener).obj.CompleteOnDisk()
		})
	}
	dataA, dataB := cacheDataFileOfSize(t, cache, int64(len(opened))), cacheDataFileOfSize(t, cache, int64(len(other)))
	// A second mount on the same cache dir has opened one of them. (Marked
	// so rather than opened: an open would start a fill of its own.)
	e := newTestEngine(t, dir, edit)
	e.pf.opened.Store("a.safetensors", true)
	for _, data := range []string{dataA, dataB} {
		mountproc.DropCache(t, data)
		if r := resident(t, data); r == 1 {
			t.Skipf("the page cache of %s cannot be dropped on this filesystem: nothing to fill", data)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.pf.fillWhenIdle(ctx, 10*time.Millisecond)
	}()
	waitFor(t, "the opened object's cache file to be resident", func() bool { return resident(t, dataA) == 1 })
	cancel()
	<-done // the pass that filled it has decided on the other one too
	if _, started := e.pf.primed.Load("b.safetensors"); started {
		t.Fatal("the idle fill started on an object this mount never opened")
	}
}

// cacheDataFileOfSize returns the object data file of size bytes under a
// cache dir.
func cacheDataFileOfSize(t *testing.T, cache string, size int64) string {
	t.Helper()
	var found []string
	filepath.WalkDir(cache, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "data" || !d.Type().IsRegular() {
			return nil
		}
		if st, err := os.Stat(path); err == nil && st.Size() == size {
			found = append(found, path)
		}
		return nil
	})
	if len(found) != 1 {
		t.Fatalf("data files of %d bytes under %s: %v, want one", size, cache, found)
	}
	return found[0]
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

// resident returns the share of the file at path in the page cache.
func resident(t *testing.T, path string) float64 {
	t.Helper()
	pages := mountproc.Resident(t, path)
	n := 0
	for _, in := range pages {
		if in {
			n++
		}
	}
	return float64(n) / float64(max(len(pages), 1))
}

// cached tells a file in the page cache from one that is not, and a
// range of it from the rest.
func TestCachedSeesThePageCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if _, err := f.ReadAt(make([]byte, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if !cached(fd, 0, 4<<20) {
		t.Fatal("a file just read is not seen as cached")
	}
	mountproc.DropCache(t, path)
	if r := resident(t, path); r == 1 {
		t.Skipf("the page cache of %s cannot be dropped on this filesystem", path)
	}
	if cached(fd, 0, 4<<20) {
		t.Fatal("a dropped file is seen as cached")
	}
	// No readahead, so that the read brings in that MiB alone.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if !cached(fd, 0, 1<<20) || cached(fd, 0, 4<<20) {
		t.Fatalf("after reading the first MiB: cached(first MiB) %v, cached(all) %v; want true, false",
			cached(fd, 0, 1<<20), cached(fd, 0, 4<<20))
	}
}
