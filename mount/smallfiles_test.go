package mount

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/mount/config"
)

// The model's small files are fetched when the mount starts, before any
// reader opens them: config.json first, then the files nearest the root,
// at most an eighth of the RAM budget's blocks. The weights are left to
// their readers.
func TestSmallFilesAreFetchedAtMount(t *testing.T) {
	dir := t.TempDir()
	writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 4, 24<<10) // 768 KiB, past SmallFile
	write := func(path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), []byte(`{"path": "`+path+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := []string{"config.json", "generation_config.json", "tokenizer_config.json"}
	for _, p := range root {
		write(p)
	}
	// Deeper files, more than the cap leaves room for: 64 KiB blocks in a
	// 4 MiB budget make 64 blocks, an eighth of which is 8.
	var deep []string
	for i := range 10 {
		deep = append(deep, fmt.Sprintf("extra/%02d.json", i))
		write(deep[i])
	}
	e := newTestEngine(t, dir, func(c *config.Config) { c.SmallFile = 64 << 10 })
	e.StartPrefetch(t.Context())

	cached := func(path string) bool {
		st := e.r.cache.ObjectStats([]blockcache.ObjectID{e.pf.files[path].cacheID()})[0]
		return st.CachedBytes > 0 && st.FetchedBytes == e.pf.objs[path].Size()
	}
	want := append(append([]string{}, root...), deep[:5]...)
	for _, path := range want {
		waitFor(t, path+" to be fetched without an open", func() bool { return cached(path) })
	}
	for _, path := range deep[5:] {
		if cached(path) {
			t.Errorf("%s was fetched: past the cap of eight small files", path)
		}
	}
	st := e.r.cache.ObjectStats([]blockcache.ObjectID{e.pf.files["model.safetensors"].cacheID()})[0]
	if st.FetchedBytes != 0 {
		t.Errorf("%d bytes of the weights fetched with no reader", st.FetchedBytes)
	}
}

// With prefetch off, or readahead only, nothing is fetched at mount:
// small files are fetched whole when first opened.
func TestSmallFilesWaitForReadersWithoutAPlan(t *testing.T) {
	for _, mode := range []config.Prefetch{config.PrefetchOff, config.PrefetchReadahead} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o644); err != nil {
				t.Fatal(err)
			}
			e := newTestEngine(t, dir, func(c *config.Config) { c.Prefetch = mode })
			e.StartPrefetch(t.Context())
			// A prefetch is queued or loaded by the time Prefetch returns.
			st := e.r.cache.ObjectStats([]blockcache.ObjectID{e.pf.files["config.json"].cacheID()})[0]
			if st.CachedBytes != 0 || st.Pending.Has(0) {
				t.Fatalf("config.json fetched with --prefetch %s and no reader", mode)
			}
		})
	}
}

// The cap holds across a manifest's models: together their small files
// take at most an eighth of the RAM budget's blocks.
func TestSmallFilesOfAllModelsShareOneCap(t *testing.T) {
	top := t.TempDir()
	manifest := map[string]any{}
	for _, name := range []string{"a", "b"} {
		dir := filepath.Join(top, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.json", i)), []byte(`{}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		manifest[name] = map[string]string{"source": "file://" + dir}
	}
	data, err := json.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	mf := filepath.Join(top, "models.json")
	if err := os.WriteFile(mf, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// 64 KiB blocks in a 4 MiB budget: 64 blocks, an eighth of which is 8.
	e := newTestEngine(t, top, func(c *config.Config) { c.Source, c.Manifest = "", mf })
	e.StartPrefetch(t.Context())
	fetched := map[string]int{}
	for _, f := range e.pf.files {
		st := e.r.cache.ObjectStats([]blockcache.ObjectID{f.cacheID()})[0]
		if st.CachedBytes > 0 || st.Pending.Has(0) {
			fetched[f.model.spec.Name]++
		}
	}
	if got := []int{fetched["a"], fetched["b"]}; got[0]+got[1] != 8 || max(got[0], got[1]) != 6 {
		t.Fatalf("small files fetched by model: a %d, b %d; want 8 in all, one model's 6 first", got[0], got[1])
	}
}

// A small file complete in the disk cache is handed to passthrough when
// opened, and its blocks are not also read from disk into RAM: the kernel
// reads the cache file, and a remount's first opens would otherwise each
// load their file beside the reader.
func TestPassedThroughSmallFileIsNotLoaded(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	want := []byte(`{"architectures": ["LlamaForCausalLM"]}`)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	edit := func(c *config.Config) { c.CacheDir = cache }
	first := newTestEngine(t, dir, edit)
	f := fileByPath(t, first.Files(), "config.json")
	if got := readAll(t, f, 1<<20); string(got) != string(want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	waitFor(t, "config.json to be complete on disk", func() bool {
		return f.Content.(*streamOpener).obj.CompleteOnDisk()
	})
	first.Close()

	e := newTestEngine(t, dir, edit)
	e.StartPrefetch(t.Context())
	h := fileByPath(t, e.Files(), "config.json").Content.Open()
	defer h.Release()
	if _, ok := h.(fs.Passthrougher); !ok {
		t.Fatal("the complete small file was not handed out for passthrough")
	}
	if st := e.r.cache.Stats(); st.DiskHits != 0 || st.Loads != 0 {
		t.Fatalf("opening a passed-through small file loaded it: %d disk hits, %d loads", st.DiskHits, st.Loads)
	}
}
