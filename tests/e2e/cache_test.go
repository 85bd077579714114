package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/modelfs/modelfs/tests/mountproc"
)

// readModel checks every model file through the mount against the source.
func readModel(t *testing.T, m *mount) {
	t.Helper()
	for _, name := range model.Files {
		if got, want := sha256File(t, m.path(name)), hexSum(sourceBytes(t, name)); got != want {
			t.Fatalf("%s: sha256 through the mount differs from the source", name)
		}
	}
}

func TestDiskCachePersistsAcrossMountsAndOutages(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	args := append(r.mountArgs(), "--cache-dir", cacheDir)

	m := startMount(t, "s3://"+bucket, args...)
	readModel(t, m)
	m.stop(t)
	if r.srv.Stats().Gets == 0 {
		t.Fatal("first mount made no GETs")
	}

	r.srv.ResetStats()
	m = startMount(t, "s3://"+bucket, args...)
	readModel(t, m)
	m.stop(t)
	if gets := r.srv.Stats().Gets; gets != 0 {
		t.Fatalf("a remount on the same cache dir made %d GETs, want 0", gets)
	}

	// With the server gone, a fresh mount starts from the saved listing and
	// serves every cached byte.
	r.srv.Close()
	m = startMount(t, "s3://"+bucket, append(args, "--retries", "1")...)
	readModel(t, m)
	if !strings.Contains(m.Log(), "saved listing") {
		t.Errorf("no warning about the saved listing:\n%s", m.Log())
	}
}

func TestKilledFillLeavesNothingWrong(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	args := append(r.mountArgs(), "--cache-dir", cacheDir, "--block-size", "256KiB", "--prefetch", "readahead")
	name := biggest(t)
	// Let a few GETs of the file through, then hold the rest: the mount is
	// killed with the fill under way, some blocks on disk and not all.
	var gets atomic.Int32
	gate := make(chan struct{})
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/"+name) && gets.Add(1) > 4 {
			<-gate
		}
		return false
	})
	defer r.srv.SetHook(nil)
	m := startMount(t, "s3://"+bucket, args...)
	reader := exec.Command("cat", m.path(name))
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	size := int64(len(sourceBytes(t, name)))
	waitForCondition(t, "the disk cache to start filling", func() bool { return diskUsage(t, cacheDir) > 0 })
	if used := diskUsage(t, cacheDir); used >= size {
		t.Fatalf("the fill was not held: %d of %d bytes cached", used, size)
	}
	m.Kill()
	close(gate)
	reader.Wait()
	if code, stderr := runCLI(t, testEnv(), "unmount", m.dir); code != 0 {
		t.Fatalf("unmount after kill -9: %s", stderr)
	}
	m = startMount(t, "s3://"+bucket, args...)
	readModel(t, m)
}

func TestMountsShareOneCacheDir(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	args := append(r.mountArgs(), "--cache-dir", cacheDir, "--block-size", "1MiB", "--cache-size", "16MiB")
	mounts := []*mount{startMount(t, "s3://"+bucket, args...), startMount(t, "s3://"+bucket, args...)}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := mounts[i%2]
			for j := range model.Files {
				name := model.Files[(i+j)%len(model.Files)]
				if got, want := sha256File(t, m.path(name)), hexSum(sourceBytes(t, name)); got != want {
					t.Errorf("reader %d: %s differs from the source", i, name)
				}
			}
		}()
	}
	wg.Wait()
	if used := diskUsage(t, cacheDir); used > 16<<20+1<<20 {
		t.Fatalf("two mounts left %d bytes of blocks in a 16 MiB cache", used)
	}
}

func TestFullCacheDirKeepsServing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a small tmpfs needs root")
	}
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	if err := syscall.Mount("tmpfs", cacheDir, "tmpfs", 0, "size=3m"); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(cacheDir, syscall.MNT_DETACH) })
	// The budget claims more than the tmpfs holds: writes hit ENOSPC.
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--cache-dir", cacheDir, "--cache-size", "1GiB", "--block-size", "1MiB")...)
	readModel(t, m)
	if !strings.Contains(m.Log(), "caching in RAM only") {
		t.Fatalf("no log line about the full cache dir:\n%s", m.Log())
	}
}

// diskUsage is the space the cache's data files really occupy.
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var used int64
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && info.Name() == "data" {
			used += info.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return used
}

// Once an object is complete in the disk cache, a new mount hands the
// kernel the cache file (FUSE passthrough): reads never reach modelfs.
func TestCompleteObjectsArePassedThrough(t *testing.T) {
	mountproc.SkipWithoutPassthrough(t)
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	args := append(r.mountArgs(), "--cache-dir", cacheDir)
	m := startMount(t, "s3://"+bucket, args...)
	readModel(t, m)
	m.stop(t)

	r.srv.ResetStats()
	m = startMount(t, "s3://"+bucket, args...)
	readModel(t, m)
	m.stop(t)
	if !strings.Contains(m.Log(), "fuse_reads=0 ") {
		t.Fatalf("reads reached modelfs although every object was cached:\n%s", m.Log())
	}
	if strings.Contains(m.Log(), "passthrough_opens=0 ") || !strings.Contains(m.Log(), "passthrough_opens=") {
		t.Fatalf("no open was counted as passed through:\n%s", m.Log())
	}
	if gets := r.srv.Stats().Gets; gets != 0 {
		t.Fatalf("%d GETs from a fully cached remount", gets)
	}
}

func TestCacheCommands(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	cacheDir := t.TempDir()
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--cache-dir", cacheDir, "--block-size", "1MiB")...)
	readModel(t, m)
	m.stop(t)

	ls := func() map[string]float64 {
		t.Helper()
		out, err := exec.Command(modelfsBin, "cache", "ls", "--json", "--cache-dir", cacheDir).Output()
		if err != nil {
			t.Fatalf("cache ls: %v", err)
		}
		var objs []struct {
			Name              string
			Size, CachedBytes int64
		}
		if err := json.Unmarshal(out, &objs); err != nil {
			t.Fatalf("cache ls --json: %v\n%s", err, out)
		}
		got := map[string]float64{}
		for _, o := range objs {
			got[o.Name] = float64(o.CachedBytes) / float64(max(o.Size, 1))
		}
		return got
	}
	got := ls()
	for _, name := range model.Files {
		if got[name] != 1 {
			t.Errorf("cache ls: %s is %.0f%% cached, want 100%%", name, 100*got[name])
		}
	}
	if code, stderr := runCLI(t, testEnv(), "cache", "drop", "--cache-dir", cacheDir, model.Files[0]); code != 0 {
		t.Fatalf("cache drop: %s", stderr)
	}
	if _, ok := ls()[model.Files[0]]; ok {
		t.Fatalf("%s still listed after cache drop", model.Files[0])
	}
	if code, stderr := runCLI(t, testEnv(), "cache", "gc", "--cache-dir", cacheDir, "--size", "8MiB"); code != 0 {
		t.Fatalf("cache gc: %s", stderr)
	}
	if used := diskUsage(t, cacheDir); used > 8<<20 {
		t.Fatalf("after gc to 8 MiB the cache occupies %d bytes", used)
	}
	if code, _ := runCLI(t, testEnv(), "cache", "ls", "--cache-dir", t.TempDir()); code == 0 {
		t.Fatal("cache ls of an empty directory succeeded")
	}
}

// The mount's peak resident memory follows --mem-cache while a model
// three times the budget streams through it.
func TestRSSStaysWithinRAMBudget(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--mem-cache", "16MiB", "--block-size", "1MiB", "--concurrency", "4")...)
	readModel(t, m)
	// VmHWM, the kernel's high-water mark, covers every peak, not only
	// those a sampler happens to see.
	got, err := m.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	const limit = 16<<20 + 64<<20
	t.Logf("peak RSS of the mount: %d MiB", got>>20)
	if got == 0 || got > limit {
		t.Fatalf("peak RSS %d MiB, want more than 0 and at most %d MiB", got>>20, limit>>20)
	}
}
