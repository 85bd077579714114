package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeManifest writes models as a manifest file and returns its path.
func writeManifest(t *testing.T, models map[string]any) string {
	t.Helper()
	data, err := json.Marshal(models)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "models.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startManifestMount mounts a manifest. startMount puts its source
// argument right before the mountpoint, where --manifest's value goes.
func startManifestMount(t *testing.T, manifest string, args ...string) *mount {
	t.Helper()
	return startMount(t, manifest, append(args, "--manifest")...)
}

// modelBytes is the size of the model's files together.
func modelBytes(t *testing.T) int64 {
	var n int64
	for _, name := range model.Files {
		n += int64(len(sourceBytes(t, name)))
	}
	return n
}

// modelSums are the sha256 of every model file, by name.
func modelSums(t *testing.T) map[string]string {
	sums := map[string]string{}
	for _, name := range model.Files {
		sums[name] = hexSum(sourceBytes(t, name))
	}
	return sums
}

// Three models from two sources (two S3 prefixes, a local directory), one
// cache: every file reads right under its model's directory, and no two
// models share a cache entry, though two hold the very same objects.
func TestManifestMountsEveryModel(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "a/")
	r.uploadModel(t, "b/")
	manifest := writeManifest(t, map[string]any{
		"llama-a": map[string]any{"source": "s3://" + bucket + "/a/", "format": "safetensors", "size": fmt.Sprint(modelBytes(t))},
		"llama-b": map[string]any{"source": "s3://" + bucket + "/b", "size": "1TB"},
		"local":   map[string]any{"source": "file://" + modelDir, "sha256": modelSums(t)},
	})
	cacheDir := t.TempDir()
	m := startManifestMount(t, manifest, append(r.mountArgs(), "--cache-dir", cacheDir, "--metrics-addr", "127.0.0.1:0")...)

	names := dirNames(t, m.dir)
	if strings.Join(names, ",") != "llama-a,llama-b,local" {
		t.Fatalf("mount root lists %v, want the three models", names)
	}
	for _, mod := range []string{"llama-a", "llama-b", "local"} {
		for _, name := range model.Files {
			if got, want := sha256File(t, m.path(mod+"/"+name)), hexSum(sourceBytes(t, name)); got != want {
				t.Errorf("%s/%s: sha256 %s through the mount, want %s", mod, name, got, want)
			}
		}
	}
	if r.srv.GetsFor(bucket, "a/"+biggest(t)) == 0 || r.srv.GetsFor(bucket, "b/"+biggest(t)) == 0 {
		t.Error("the S3 models were not both read from their own prefix")
	}

	// Fetch metrics say which model's source they count.
	mf := scrape(t, "http://"+metricsAddr(t, m)+"/metrics")
	for _, mod := range []string{"llama-a", "llama-b"} {
		if v := sum(mf, "modelfs_fetch_bytes_total", map[string]string{"source": "s3", "model": mod, "op": "get"}); v < float64(modelBytes(t)) {
			t.Errorf("modelfs_fetch_bytes_total{model=%q} = %v, want at least the model's %d bytes", mod, v, modelBytes(t))
		}
	}
	if v := sum(mf, "modelfs_fetch_requests_total", map[string]string{"model": "local"}); v != 0 {
		t.Errorf("modelfs_fetch_requests_total{model=\"local\"} = %v: a local directory makes no requests", v)
	}

	st := readStatsFile(t, m)
	if len(st.Models) != 3 || len(st.Files) != 3*len(model.Files) {
		t.Fatalf("stats show %d models and %d files, want 3 and %d", len(st.Models), len(st.Files), 3*len(model.Files))
	}
	for _, mod := range st.Models {
		if mod.Files != len(model.Files) || mod.Size != modelBytes(t) || mod.Cached != mod.Size {
			t.Errorf("model %s in stats: %+v; want %d files, %d bytes, all cached", mod.Name, mod, len(model.Files), modelBytes(t))
		}
	}

	m.stop(t) // waits for the disk write-backs
	logs := m.Log()
	if !strings.Contains(logs, "model size differs") || !strings.Contains(logs, "model=llama-b") || strings.Contains(logs, "model=llama-a manifest=") {
		t.Errorf("want a size warning for llama-b (1TB) only:\n%s", logs)
	}
	code, out, stderr := runCLIOutput(t, "cache", "ls", "--json", "--cache-dir", cacheDir)
	if code != 0 {
		t.Fatalf("cache ls: %s", stderr)
	}
	var cached []struct{ Name string }
	if err := json.Unmarshal([]byte(out), &cached); err != nil {
		t.Fatal(err)
	}
	var cachedNames []string
	for _, c := range cached {
		cachedNames = append(cachedNames, c.Name)
	}
	sort.Strings(cachedNames)
	var want []string
	for _, mod := range []string{"llama-a", "llama-b", "local"} {
		for _, name := range model.Files {
			want = append(want, mod+"/"+name)
		}
	}
	sort.Strings(want)
	if strings.Join(cachedNames, ",") != strings.Join(want, ",") {
		t.Errorf("disk cache holds %v, want one entry per model file: %v", cachedNames, want)
	}
}

// A bad manifest, or a model that cannot be listed, is a one-line error
// naming the entry, before anything is mounted.
func TestManifestErrorsNameTheEntry(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "a/")
	ok := map[string]any{"source": "s3://" + bucket + "/a"}
	mnt := t.TempDir()
	write := func(data string) string {
		path := filepath.Join(t.TempDir(), "models.json")
		os.WriteFile(path, []byte(data), 0o644)
		return path
	}
	for _, tc := range []struct {
		name     string
		manifest string
		extra    []string // arguments after the mountpoint's place
		mentions []string
	}{
		{"bad JSON", write(`{"llama": {"source": `), nil, []string{"unexpected end"}},
		{"unknown field", write(`{"llama": {"source": "s3://models/a", "formt": "gguf"}}`), nil, []string{`model "llama"`, `unknown field "formt"`}},
		{"empty source", write(`{"llama": {"source": ""}}`), nil, []string{`model "llama"`, "source: empty"}},
		{"bad scheme", write(`{"ok": {"source": "s3://models/a"}, "llama": {"source": "ftp://models/a"}}`), nil, []string{`model "llama"`, "unknown scheme"}},
		{"unsafe name", write(`{"../up": {"source": "s3://models/a"}}`), nil, []string{`model "../up"`, "name"}},
		{"bad sha256", write(`{"llama": {"source": "s3://models/a", "sha256": "123"}}`), nil, []string{`model "llama"`, "sha256"}},
		{"bad sha256 path", write(`{"llama": {"source": "s3://models/a", "sha256": {"/etc/passwd": "` + strings.Repeat("a", 64) + `"}}}`), nil, []string{`model "llama"`, `"/etc/passwd"`}},
		{"bad size", write(`{"llama": {"source": "s3://models/a", "size": "lots"}}`), nil, []string{`model "llama"`, `size "lots"`}},
		{"bad format", write(`{"llama": {"source": "s3://models/a", "format": "onnx"}}`), nil, []string{`model "llama"`, `format "onnx"`}},
		{"no models", write(`{}`), nil, []string{"no models"}},
		{"no such file", filepath.Join(t.TempDir(), "missing.json"), nil, []string{"manifest", "missing.json"}},
		{"missing bucket", writeManifest(t, map[string]any{"ok": ok, "gone": map[string]any{"source": "s3://no-such-bucket/x"}}), nil, []string{`model "gone"`, "does not exist"}},
		{"and a SOURCE", writeManifest(t, map[string]any{"ok": ok}), []string{"s3://" + bucket + "/a"}, []string{"mutually exclusive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"mount"}, r.mountArgs()...), "--manifest", tc.manifest)
			args = append(append(args, tc.extra...), mnt)
			code, stderr := runCLI(t, testEnv(), args...)
			msg := strings.TrimSpace(stderr)
			if code == 0 || strings.Contains(msg, "\n") {
				t.Fatalf("exit %d, stderr %q; want a one-line error", code, stderr)
			}
			for _, w := range tc.mentions {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if strings.Contains(msg, secretKey) {
				t.Error("the error shows the secret key")
			}
		})
	}
}

// warm --manifest fills one cache for every model and checks the
// manifest's hashes; a mount of the manifest then fetches nothing.
func TestWarmManifestVerifiesHashes(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "a/")
	r.uploadModel(t, "b/")
	shard := biggest(t)
	sums := modelSums(t)
	models := map[string]any{
		"llama-a": map[string]any{"source": "s3://" + bucket + "/a", "sha256": sums},
		// A prefix naming one object is a single-file model: one hash.
		"one":   map[string]any{"source": "s3://" + bucket + "/b/" + shard, "sha256": sums[shard]},
		"local": map[string]any{"source": "file://" + modelDir},
	}
	cacheDir := t.TempDir()
	warm := func(manifest string, extra ...string) (int, string) {
		args := append(append([]string{"warm"}, r.mountArgs()...), "--cache-dir", cacheDir, "--block-size", "1MiB", "--manifest", manifest)
		return runCLI(t, testEnv(), append(args, extra...)...)
	}
	if code, stderr := warm(writeManifest(t, models)); code != 0 {
		t.Fatalf("warm --manifest: exit %d: %s", code, stderr)
	}

	r.srv.ResetStats()
	m := startManifestMount(t, writeManifest(t, models), append(r.mountArgs(), "--cache-dir", cacheDir, "--block-size", "1MiB")...)
	for _, name := range model.Files {
		for _, path := range []string{"llama-a/" + name, "local/" + name} {
			if got := sha256File(t, m.path(path)); got != sums[name] {
				t.Errorf("%s: wrong sha256 after warm", path)
			}
		}
	}
	if got := sha256File(t, m.path("one/"+shard)); got != sums[shard] {
		t.Errorf("one/%s: wrong sha256 after warm", shard)
	}
	if gets := r.srv.Stats().Gets; gets != 0 {
		t.Errorf("a mount of the warmed manifest made %d GETs, want 0", gets)
	}
	m.stop(t)

	// A wrong hash fails, naming the model and the file.
	bad := map[string]string{}
	for k, v := range sums {
		bad[k] = v
	}
	bad[shard] = strings.Repeat("0", 64)
	models["llama-a"] = map[string]any{"source": "s3://" + bucket + "/a", "sha256": bad}
	code, stderr := warm(writeManifest(t, models))
	if code == 0 || !strings.Contains(stderr, "checksum mismatch") || !strings.Contains(stderr, `model "llama-a"`) || !strings.Contains(stderr, shard) {
		t.Errorf("warm with a wrong hash: exit %d, %q; want a mismatch naming llama-a and %s", code, stderr, shard)
	}

	// One hash for a model of several files, or a hash for a file the
	// model lacks, is an error naming the model.
	for _, tc := range []struct {
		entry    map[string]any
		mentions string
	}{
		{map[string]any{"source": "file://" + modelDir, "sha256": sums[shard]}, "one hash"},
		{map[string]any{"source": "file://" + modelDir, "sha256": map[string]string{"nope.bin": sums[shard]}}, `"nope.bin"`},
	} {
		code, stderr := warm(writeManifest(t, map[string]any{"multi": tc.entry}))
		if code == 0 || !strings.Contains(stderr, `model "multi"`) || !strings.Contains(stderr, tc.mentions) {
			t.Errorf("warm: exit %d, %q; want an error naming model \"multi\" and %s", code, stderr, tc.mentions)
		}
	}
	if code, stderr := runCLI(t, testEnv(), "warm", "--cache-dir", cacheDir, "--manifest", writeManifest(t, models), "s3://"+bucket+"/a"); code == 0 || !strings.Contains(stderr, "mutually exclusive") {
		t.Errorf("warm --manifest with a SOURCE: exit %d, %q", code, stderr)
	}
}

// One model's source stops answering ranged GETs while readers of it wait
// on more blocks than there are workers: a read of another model of the
// same mount is still served, while the stall goes on.
func TestManifestStalledModelDoesNotStarveAnother(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "stalled/")
	r.uploadModel(t, "healthy/")
	release := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	var stalls atomic.Int64
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet || req.Header.Get("Range") == "" || !strings.HasPrefix(req.URL.Path, "/"+bucket+"/stalled/") {
			return false
		}
		stalls.Add(1)
		defer stalls.Add(-1)
		select {
		case <-release: // then served as usual
			return false
		case <-req.Context().Done():
			return true
		}
	})
	manifest := writeManifest(t, map[string]any{
		"stalled": map[string]any{"source": "s3://" + bucket + "/stalled/"},
		"healthy": map[string]any{"source": "s3://" + bucket + "/healthy/"},
	})
	const workers = 4
	m := startManifestMount(t, manifest, append(r.mountArgs(), "--concurrency", fmt.Sprint(workers),
		"--block-size", "1MiB", "--request-timeout", "10m")...)

	shard := biggest(t)
	want := sourceBytes(t, shard)
	read := func(path string, off int64) error {
		f, err := os.Open(m.path(path))
		if err != nil {
			return err
		}
		defer f.Close()
		p := make([]byte, 4<<10)
		if _, err := f.ReadAt(p, off); err != nil {
			return fmt.Errorf("reading %s at %d: %w", path, off, err)
		}
		if !bytes.Equal(p, want[off:off+int64(len(p))]) {
			return fmt.Errorf("%s at %d: wrong bytes", path, off)
		}
		return nil
	}
	// Readers of the stalled model ask for twice as many blocks as there
	// are workers.
	stalledDone := make(chan error, 2*workers)
	for i := range 2 * workers {
		go func() { stalledDone <- read("stalled/"+shard, int64(i)<<20) }()
	}
	waitForCondition(t, "the stalled model's GETs to hold the workers", func() bool { return stalls.Load() >= workers-1 })

	healthy := make(chan error, 1)
	t0 := time.Now()
	go func() { healthy <- read("healthy/"+shard, int64(len(want))/2) }()
	select {
	case err := <-healthy:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the healthy model's read took %v with %d GETs stalled", time.Since(t0), stalls.Load())
	case err := <-stalledDone:
		t.Fatalf("a read of the stalled model ended before the stall did: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("a 4 KiB read of the healthy model waited 60s behind the stalled one (%d GETs stalled)", stalls.Load())
	}
	if stalls.Load() == 0 {
		t.Fatal("the stall was over before the healthy read ended")
	}

	// Once the source answers again, the stalled readers get their bytes.
	close(release)
	released = true
	for range 2 * workers {
		if err := <-stalledDone; err != nil {
			t.Error(err)
		}
	}
}
