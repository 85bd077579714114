package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// statsSnapshot is the part of the stats file the tests check.
type statsSnapshot struct {
	Format      string    `json:"format"`
	GeneratedAt time.Time `json:"generated_at"`
	Prefetch    string    `json:"prefetch"`
	Files       []struct {
		Path          string  `json:"path"`
		Model         string  `json:"model"`
		Size          int64   `json:"size"`
		CachedBytes   int64   `json:"cached_bytes"`
		CachedPercent float64 `json:"cached_percent"`
		RAMBytes      int64   `json:"ram_bytes"`
		DiskBytes     int64   `json:"disk_bytes"`
		FetchedBytes  int64   `json:"fetched_bytes"`
		Prefetch      *struct {
			PlannedBytes int64 `json:"planned_bytes"`
			DoneBytes    int64 `json:"done_bytes"`
		} `json:"prefetch"`
	} `json:"files"`
	Models []struct {
		Name   string `json:"name"`
		Files  int    `json:"files"`
		Size   int64  `json:"size"`
		Cached int64  `json:"cached_bytes"`
	} `json:"models"`
	Totals struct {
		Files        int   `json:"files"`
		Size         int64 `json:"size"`
		CachedBytes  int64 `json:"cached_bytes"`
		FetchedBytes int64 `json:"fetched_bytes"`
	} `json:"totals"`
	Cache struct {
		RAMBytes      int64 `json:"ram_bytes"`
		RAMCapacity   int64 `json:"ram_capacity_bytes"`
		DiskBytes     int64 `json:"disk_bytes"`
		Misses        int64 `json:"misses"`
		FetchedBytes  int64 `json:"fetched_bytes"`
		PrefetchBytes int64 `json:"prefetch_bytes"`
	} `json:"cache"`
	FUSE struct {
		ReadBytes int64 `json:"read_bytes"`
	} `json:"fuse"`
}

func decodeStats(t *testing.T, data []byte) *statsSnapshot {
	t.Helper()
	var st statsSnapshot
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("stats JSON: %v\n%s", err, data)
	}
	if st.Format != "modelfs-stats/1" {
		t.Fatalf("stats format %q", st.Format)
	}
	return &st
}

// readStatsFile reads the mount's stats file directly, as a script in a
// container would.
func readStatsFile(t *testing.T, m *mount) *statsSnapshot {
	t.Helper()
	data, err := os.ReadFile(m.path(".modelfs-stats"))
	if err != nil {
		t.Fatal(err)
	}
	return decodeStats(t, data)
}

// A file read whole is all cached and was fetched; one read in part is
// partly cached; with prefetch off, the others hold nothing. Totals add up.
// With a disk tier: RAM reuses the blocks a reader was served whole (its
// page cache holds them), so "cached" of a file read whole is on disk.
func TestStatsReportsWhatWasRead(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	m := startMount(t, "s3://"+bucket+"/llama", append(r.mountArgs(), "--prefetch", "off", "--block-size", "1MiB", "--cache-dir", t.TempDir())...)

	full := biggest(t)
	data, err := os.ReadFile(m.path(full))
	if err != nil {
		t.Fatal(err)
	}
	partial := ""
	for _, name := range model.Files {
		if name != full && strings.HasSuffix(name, ".safetensors") {
			partial = name
			break
		}
	}
	f, err := os.Open(m.path(partial))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Blocks reach the disk tier just after readers get them.
	waitForCondition(t, "the file read whole to be all on disk", func() bool {
		for _, f := range readStatsFile(t, m).Files {
			if f.Path == full {
				return f.DiskBytes == f.Size
			}
		}
		return false
	})

	code, out, stderr := runCLIOutput(t, "stats", "--json", m.dir)
	if code != 0 {
		t.Fatalf("stats --json: exit %d: %s", code, stderr)
	}
	st := decodeStats(t, []byte(out))
	if st.Prefetch != "off" || len(st.Files) != len(model.Files) {
		t.Fatalf("stats show prefetch %q and %d files; want off and %d", st.Prefetch, len(st.Files), len(model.Files))
	}
	var size, cached, fetched int64
	for _, f := range st.Files {
		size += f.Size
		cached += f.CachedBytes
		fetched += f.FetchedBytes
		if f.CachedBytes > f.Size || f.CachedBytes > f.RAMBytes+f.DiskBytes || f.Prefetch != nil {
			t.Errorf("%s: inconsistent: %+v", f.Path, f)
		}
		switch f.Path {
		case full:
			if f.Size != int64(len(data)) || f.CachedBytes != f.Size || f.CachedPercent != 100 || f.FetchedBytes < f.Size {
				t.Errorf("%s, read whole: %+v; want 100%% cached and at least its size fetched", f.Path, f)
			}
		case partial:
			if f.CachedBytes <= 0 || f.CachedBytes >= f.Size || f.FetchedBytes <= 0 || f.CachedPercent <= 0 || f.CachedPercent >= 100 {
				t.Errorf("%s, read in part: %+v; want partly cached and fetched", f.Path, f)
			}
		default:
			if f.CachedBytes != 0 || f.FetchedBytes != 0 || f.CachedPercent != 0 {
				t.Errorf("%s, never read, prefetch off: %+v; want nothing cached or fetched", f.Path, f)
			}
		}
	}
	if st.Totals.Files != len(st.Files) || st.Totals.Size != size || st.Totals.CachedBytes != cached || st.Totals.FetchedBytes != fetched {
		t.Errorf("totals %+v do not add up: %d files, %d bytes, %d cached, %d fetched", st.Totals, len(st.Files), size, cached, fetched)
	}
	if st.Cache.FetchedBytes != fetched || st.Cache.RAMBytes+st.Cache.DiskBytes < cached || st.Cache.RAMBytes > st.Cache.RAMCapacity || st.Cache.Misses == 0 {
		t.Errorf("cache totals %+v: want %d bytes fetched, at least %d in RAM or on disk, RAM within capacity, some misses", st.Cache, fetched, cached)
	}
	if st.FUSE.ReadBytes < int64(len(data)) {
		t.Errorf("FUSE read bytes %d, want at least the %d read", st.FUSE.ReadBytes, len(data))
	}

	// Every open is a new snapshot, never a stale page.
	again := readStatsFile(t, m)
	if !again.GeneratedAt.After(st.GeneratedAt) {
		t.Errorf("a second open served the snapshot of %v again", st.GeneratedAt)
	}

	// The table names every file and the totals.
	code, out, stderr = runCLIOutput(t, "stats", m.dir)
	if code != 0 {
		t.Fatalf("stats: exit %d: %s", code, stderr)
	}
	for _, name := range append([]string{"TOTAL", "cache", "100.0%"}, model.Files...) {
		if !strings.Contains(out, name) {
			t.Errorf("stats output lacks %q:\n%s", name, out)
		}
	}

	// The stats file is found by name, read-only, and not listed.
	sf := m.path(".modelfs-stats")
	if fi, err := os.Stat(sf); err != nil || fi.Mode() != 0o444 {
		t.Errorf("stat %s: %v, %v; want a 0444 file", sf, fi, err)
	}
	if err := os.WriteFile(sf, []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing the stats file: %v, want EROFS", err)
	}
	ls, err := exec.Command("ls", "-a", m.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -a: %v: %s", err, ls)
	}
	if strings.Contains(string(ls), ".modelfs-stats") || !strings.Contains(string(ls), full) {
		t.Errorf("ls -a of the mount root:\n%s\nwant the files and no stats file", ls)
	}
}

// A failing stats command says what is wrong with its argument, in one line.
func TestStatsOfWhatIsNotAMount(t *testing.T) {
	plain := t.TempDir()
	// A file of the stats file's name in a plain directory is not a mount.
	os.WriteFile(filepath.Join(plain, ".modelfs-stats"), []byte(`{"format": "modelfs-stats/1"}`), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stats", plain}, "is not a modelfs mount"},
		{[]string{"stats", "--json", plain}, "is not a modelfs mount"},
		{[]string{"stats", filepath.Join(plain, "missing")}, "does not exist"},
		{[]string{"stats"}, "MOUNTPOINT"},
	} {
		code, out, stderr := runCLIOutput(t, tc.args...)
		if code == 0 || out != "" || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("modelfs %v: exit %d, stdout %q, stderr %q; want one line saying %q", tc.args, code, out, stderr, tc.want)
		}
	}
}

// With prefetch on and a disk cache, each planned file reports its plan,
// and what is done of it is cached.
func TestStatsShowPrefetchProgress(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--block-size", "1MiB", "--cache-dir", t.TempDir())...)
	waitForCondition(t, "the prefetch plan", func() bool { return strings.Contains(m.Log(), "prefetch plan") })
	full := biggest(t)
	if _, err := os.ReadFile(m.path(full)); err != nil {
		t.Fatal(err)
	}
	// Blocks reach the disk tier just after readers get them.
	var st *statsSnapshot
	waitForCondition(t, "the file read on disk", func() bool {
		st = readStatsFile(t, m)
		for _, f := range st.Files {
			if f.Path == full {
				return f.DiskBytes == f.Size
			}
		}
		return false
	})
	planned := 0
	for _, f := range st.Files {
		if f.Prefetch == nil {
			if strings.HasSuffix(f.Path, ".safetensors") {
				t.Errorf("%s: no prefetch plan", f.Path)
			}
			continue
		}
		planned++
		p := f.Prefetch
		if p.PlannedBytes <= 0 || p.PlannedBytes > f.Size || p.DoneBytes > p.PlannedBytes || p.DoneBytes > f.CachedBytes {
			t.Errorf("%s: prefetch %+v, cached %d of %d: inconsistent", f.Path, *p, f.CachedBytes, f.Size)
		}
		if f.Path == full && p.DoneBytes != p.PlannedBytes {
			t.Errorf("%s, read whole: prefetch done %d of %d", f.Path, p.DoneBytes, p.PlannedBytes)
		}
	}
	if planned == 0 {
		t.Fatal("no file has prefetch progress")
	}
	if st.Cache.DiskBytes < int64(len(sourceBytes(t, full))) {
		t.Errorf("disk cache holds %d bytes, less than the file read", st.Cache.DiskBytes)
	}
}

// An object named like the stats file is not shown, and says so.
func TestStatsNameIsReserved(t *testing.T) {
	r := newRemote(t)
	r.srv.CreateBucket(bucket)
	for key, body := range map[string]string{"x/.modelfs-stats": "not stats", "x/config.json": "{}", "x/sub/.modelfs-stats": "deeper"} {
		if _, err := r.srv.PutObject(bucket, key, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	m := startMount(t, "s3://"+bucket+"/x", r.mountArgs()...)
	readStatsFile(t, m) // the stats, not the object
	if got, err := os.ReadFile(m.path("sub/.modelfs-stats")); err != nil || string(got) != "deeper" {
		t.Errorf("sub/.modelfs-stats: %q, %v; only the root's name is reserved", got, err)
	}
	if logs := m.Log(); !strings.Contains(logs, "object not shown") || !strings.Contains(logs, "reserved") {
		t.Errorf("no warning about the object named like the stats file:\n%s", logs)
	}
}
