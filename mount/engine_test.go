package mount

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/mount/config"
	"github.com/modelfs/modelfs/tests/mountproc"
)

// writeSafetensors writes a small safetensors file of layers F32 tensors
// of n floats each, random content, and returns its bytes.
func writeSafetensors(t *testing.T, path string, layers, n int) []byte {
	t.Helper()
	header := map[string]any{}
	off := 0
	for i := range layers {
		for _, w := range []string{"self_attn.q_proj", "mlp.up_proj"} {
			header[fmt.Sprintf("model.layers.%d.%s.weight", i, w)] = map[string]any{
				"dtype": "F32", "shape": []int{n}, "data_offsets": []int{off, off + 4*n},
			}
			off += 4 * n
		}
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, uint64(len(h)))
	buf.Write(h)
	data := make([]byte, off)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	buf.Write(data)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newTestEngine serves dir through an Engine with a file:// source and
// small blocks; no FUSE.
func newTestEngine(t *testing.T, dir string, edit func(*config.Config)) *Engine {
	t.Helper()
	cfg := config.Default()
	cfg.Source, cfg.Mountpoint = "file://"+dir, filepath.Join(t.TempDir(), "unused")
	cfg.BlockSize, cfg.MemCache, cfg.Prefetch = 64<<10, 4<<20, config.PrefetchLayer
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := New(t.Context(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func fileByPath(t *testing.T, files []fs.File, path string) fs.File {
	t.Helper()
	for _, f := range files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("no file %q among %d", path, len(files))
	return fs.File{}
}

// readAll reads a file through the Handle fs would use, in reads of n.
func readAll(t *testing.T, f fs.File, n int) []byte {
	t.Helper()
	h := f.Content.Open()
	defer h.Release()
	var out []byte
	p := make([]byte, n)
	for off := int64(0); ; {
		m, err := h.ReadAt(context.Background(), p, off)
		out = append(out, p[:m]...)
		off += int64(m)
		if err == io.EOF || m == 0 && err == nil {
			break
		}
		if err != nil {
			t.Fatalf("reading %s at %d: %v", f.Path, off, err)
		}
	}
	return out
}

// waitFor waits, bounded, for cond to hold.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	mountproc.WaitFor(t, what, 10*time.Second, cond)
}

func TestEngineReadsThroughTheCache(t *testing.T) {
	dir := t.TempDir()
	model := writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 4, 24<<10) // 768 KiB of tensors
	cfgJSON := []byte(`{"architectures": ["LlamaForCausalLM"]}`)
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "config.json"), cfgJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	// A disk tier: RAM reuses blocks served whole, which a mount's page
	// cache would hold; here the disk tier serves them again.
	e := newTestEngine(t, dir, func(c *config.Config) { c.Prefetch, c.CacheDir = config.PrefetchReadahead, t.TempDir() })
	files := e.Files()
	if len(files) != 2 {
		t.Fatalf("%d files, want 2", len(files))
	}
	if f := fileByPath(t, files, "model.safetensors"); f.Size != int64(len(model)) {
		t.Fatalf("model.safetensors is %d bytes, want %d", f.Size, len(model))
	}
	// Odd read sizes cross block boundaries.
	if got := readAll(t, fileByPath(t, files, "model.safetensors"), 100_003); !bytes.Equal(got, model) {
		t.Fatalf("model.safetensors read back %d bytes differing from the %d written", len(got), len(model))
	}
	if got := readAll(t, fileByPath(t, files, "sub/config.json"), 7); !bytes.Equal(got, cfgJSON) {
		t.Fatalf("sub/config.json read back %q", got)
	}
	// A second read is served from the cache: no new loads.
	before := e.Snapshot().Cache
	readAll(t, fileByPath(t, files, "model.safetensors"), 1<<20)
	after := e.Snapshot()
	if after.Cache.Loads != before.Loads || after.Cache.FetchedBytes != before.FetchedBytes {
		t.Errorf("rereading loaded again: loads %d -> %d, fetched %d -> %d", before.Loads, after.Cache.Loads, before.FetchedBytes, after.Cache.FetchedBytes)
	}
	total := int64(len(model) + len(cfgJSON))
	if after.Cache.FetchedBytes != total || after.Totals.FetchedBytes != total {
		t.Errorf("fetched %d bytes (files say %d), want each byte once: %d", after.Cache.FetchedBytes, after.Totals.FetchedBytes, total)
	}
	if after.Cache.Hits == 0 || after.Totals.Files != 2 || after.Totals.CachedPercent != 100 {
		t.Errorf("snapshot after reading everything twice: %+v, totals %+v", after.Cache, after.Totals)
	}
	if after.Source != "file://"+dir || after.BlockSize != 64<<10 || after.Prefetch != "readahead" {
		t.Errorf("snapshot describes %q, block size %d, prefetch %q", after.Source, after.BlockSize, after.Prefetch)
	}
}

func TestEnginePrefetchFollowsThePlan(t *testing.T) {
	dir := t.TempDir()
	model := writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 8, 16<<10) // 1 MiB of tensors
	e := newTestEngine(t, dir, nil)
	e.StartPrefetch(t.Context())
	st := e.Snapshot()
	plan := st.Files[0].Prefetch
	if plan == nil || plan.PlannedBytes < int64(len(model))/2 {
		t.Fatalf("prefetch plan of model.safetensors: %+v, want most of its %d bytes", plan, len(model))
	}
	// The plan is followed ahead of a reader: a loader that reads the
	// header, then touches the first page of a few tensors, as an mmap
	// loader does, brings in tensors further on without reading them.
	h := fileByPath(t, e.Files(), "model.safetensors").Content.Open()
	defer h.Release()
	hl := headerLen(model)
	p := make([]byte, 4096)
	const tensor = 64 << 10 // 16Ki floats
	for i, off := range []int64{0, int64(hl), int64(hl) + tensor, int64(hl) + 2*tensor, int64(hl) + 3*tensor} {
		if _, err := h.ReadAt(t.Context(), p, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, model[off:off+4096]) {
			t.Fatalf("read %d differs from the file", i)
		}
	}
	last := (int64(hl) + 3*tensor + 4096) / (64 << 10) // the last block read
	id := e.pf.files["model.safetensors"].cacheID()
	waitFor(t, "blocks past the reader to be prefetched", func() bool {
		st := e.r.cache.ObjectStats([]blockcache.ObjectID{id})[0]
		return e.Snapshot().Cache.PrefetchBytes > 0 && st.Cached.Has(last+2)
	})
	if got := readAll(t, fileByPath(t, e.Files(), "model.safetensors"), 1<<20); !bytes.Equal(got, model) {
		t.Fatal("model.safetensors differs from the file after prefetch")
	}
}
