package mount

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/modelformat/formattest"
	"github.com/modelfs/modelfs/mount/config"
)

// hookedSource lets a test see and change the source's reads.
type hookedSource struct {
	fetch.Source
	read func(p []byte, off int64) // before the read; may block
	done func(p []byte, off int64) // after it; may change p
}

func (s *hookedSource) ReadAt(ctx context.Context, obj fetch.Object, p []byte, off int64) (int, error) {
	if s.read != nil {
		s.read(p, off)
	}
	n, err := s.Source.ReadAt(ctx, obj, p, off)
	if s.done != nil {
		s.done(p[:n], off)
	}
	return n, err
}

// headerTestEngine serves a safetensors file of 8 tensors of n floats
// each (768 KiB for n = 24Ki) with 64 KiB blocks through src's hooks, its
// plan made if mode makes one; it returns the file's bytes.
func headerTestEngine(t *testing.T, src *hookedSource, mode config.Prefetch, n int) (*Engine, []byte) {
	t.Helper()
	dir := t.TempDir()
	model := writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 4, n)
	cfg := config.Default()
	cfg.Source, cfg.Mountpoint = "file://"+dir, filepath.Join(t.TempDir(), "unused")
	cfg.BlockSize, cfg.MemCache, cfg.Prefetch, cfg.SmallFile = 64<<10, 4<<20, mode, 64<<10
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	wrap := func(ctx context.Context, s fetch.Source, log *slog.Logger) (fetch.Source, error) {
		src.Source = s
		return src, nil
	}
	e, err := New(t.Context(), cfg, Options{Wrap: wrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	e.StartPrefetch(t.Context())
	return e, model
}

// headerLen is the size of a safetensors file's header: its length word
// and its JSON.
func headerLen(model []byte) int { return 8 + int(binary.LittleEndian.Uint64(model)) }

// readWithin reads [off, off+n) through h, failing the test if that takes
// longer than a few seconds.
func readWithin(t *testing.T, read func(p []byte) (int, error), n int) []byte {
	t.Helper()
	type result struct {
		p   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		p := make([]byte, n)
		m, err := read(p)
		ch <- result{p[:m], err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		return r.p
	case <-time.After(5 * time.Second):
		t.Fatal("the read waited for the file's first block")
		return nil
	}
}

func TestHeaderReadServedFromAChunk(t *testing.T) {
	// The planner fetched the chunk before the reader came; without a
	// planner, the reader's first read fetches it.
	for _, mode := range []config.Prefetch{config.PrefetchLayer, config.PrefetchReadahead} {
		t.Run(string(mode), func(t *testing.T) { testHeaderReadServedFromAChunk(t, mode) })
	}
}

func testHeaderReadServedFromAChunk(t *testing.T, mode config.Prefetch) {
	// The file's first block does not come until the test lets it: a
	// header read that needed it would wait.
	gate := make(chan struct{})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	var blockLoads, chunkReads atomic.Int64
	src := &hookedSource{read: func(p []byte, off int64) {
		if off == 0 && len(p) == headerChunk {
			chunkReads.Add(1)
		}
		if off == 0 && len(p) == 64<<10 {
			blockLoads.Add(1)
			<-gate
		}
	}}
	e, model := headerTestEngine(t, src, mode, 24<<10)
	t.Cleanup(open) // runs before the engine's Close, which waits for the loads
	hl := headerLen(model)
	h := fileByPath(t, e.Files(), "model.safetensors").Content.Open()
	defer h.Release()

	// A loader's header reads: the length word, then the JSON, the
	// second through the in-place path fs uses.
	got := readWithin(t, func(p []byte) (int, error) { return h.ReadAt(t.Context(), p, 0) }, 8)
	sr := h.(interface {
		ReadSlices(ctx context.Context, off int64, n int) ([][]byte, func(), error)
	})
	got = append(got, readWithin(t, func(p []byte) (int, error) {
		s, release, err := sr.ReadSlices(t.Context(), 8, len(p))
		if release != nil {
			defer release()
		}
		if err != nil || len(s) != 1 {
			return 0, errors.Join(err, errors.New("not one slice"))
		}
		return copy(p, s[0]), nil
	}, hl-8)...)
	if !bytes.Equal(got, model[:hl]) {
		t.Fatalf("header read back as %q, want the file's %d header bytes", got[:min(len(got), 40)], hl)
	}
	open()
	// The chunk is compared with the first block, then let go.
	waitFor(t, "the header chunk to be checked and let go", func() bool {
		e.pf.heads.mu.Lock()
		defer e.pf.heads.mu.Unlock()
		c := e.pf.heads.m["model.safetensors"]
		return c != nil && c.checked && c.data == nil && e.pf.heads.bytes == 0
	})
	if blockLoads.Load() == 0 {
		t.Error("the first block was never loaded to check the header against")
	}
	if n := chunkReads.Load(); n != 1 {
		t.Errorf("the header chunk was fetched %d times, want once, shared by any planner and the reader", n)
	}
	if got := readAll(t, fileByPath(t, e.Files(), "model.safetensors"), 100_003); !bytes.Equal(got, model) {
		t.Fatal("the file read back differs")
	}
	if st, err := fileByPath(t, e.Files(), "model.safetensors").Content.(*streamOpener).obj.Verification(); st == blockcache.VerifyFailed {
		t.Fatalf("the file failed its check: %v", err)
	}
}

func TestHeaderThatDiffersFromTheBlockFailsTheFile(t *testing.T) {
	// The planner's fetch of the header gets one byte of the JSON
	// changed, as a store or proxy that served two reads of one version
	// differently would: the reader is answered from it, and the
	// comparison with the first block must catch it.
	var changed atomic.Bool
	src := &hookedSource{done: func(p []byte, off int64) {
		if off == 0 && len(p) == headerChunk && !changed.Swap(true) {
			p[20] ^= 0x20 // a letter of the first tensor name: still valid JSON
		}
	}}
	e, model := headerTestEngine(t, src, config.PrefetchLayer, 24<<10)
	if !changed.Load() {
		t.Fatal("the planner did not fetch the header as a chunk")
	}
	f := fileByPath(t, e.Files(), "model.safetensors")
	h := f.Content.Open()
	defer h.Release()
	hl := headerLen(model)
	p := make([]byte, hl)
	if _, err := h.ReadAt(t.Context(), p, 0); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(p, model[:hl]) {
		t.Fatal("the header was not served from the planner's (changed) fetch")
	}
	obj := f.Content.(*streamOpener).obj
	waitFor(t, "the file to fail", func() bool {
		st, _ := obj.Verification()
		return st == blockcache.VerifyFailed
	})
	if _, err := h.ReadAt(t.Context(), make([]byte, 4096), 0); !errors.Is(err, blockcache.ErrCorrupt) {
		t.Fatalf("a read after the mismatch: %v, want ErrCorrupt", err)
	}
	if dmg, ok := f.Content.(interface{ Damaged() bool }); !ok || !dmg.Damaged() {
		t.Error("the file is not reported damaged, so the kernel would keep its pages")
	}
}

// A loader that reads a file's header and its first tensor, and stops,
// costs the source that tensor and the two blocks the kernel's readahead
// may read after it: neither readahead nor the plan asks for a block past
// those, with or without a plan, the tensor's end known from the header
// chunk.
func TestOneTensorReadFetchesThatTensor(t *testing.T) {
	for _, mode := range []config.Prefetch{config.PrefetchLayer, config.PrefetchReadahead} {
		t.Run(string(mode), func(t *testing.T) {
			e, model := headerTestEngine(t, &hookedSource{}, mode, 256<<10) // 1 MiB tensors
			f := fileByPath(t, e.Files(), "model.safetensors")
			h := f.Content.Open()
			defer h.Release()
			hl := headerLen(model)
			if _, err := h.ReadAt(t.Context(), make([]byte, 8), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := h.ReadAt(t.Context(), make([]byte, hl-8), 8); err != nil {
				t.Fatal(err)
			}
			end := int64(hl + 1<<20) // the first tensor's, in file order
			p := make([]byte, 128<<10)
			for off := int64(hl); off < end; off += int64(len(p)) {
				got := p[:min(int64(len(p)), end-off)]
				if _, err := h.ReadAt(t.Context(), got, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, model[off:off+int64(len(got))]) {
					t.Fatalf("the tensor at %d read back differs", off)
				}
			}
			const bs = 64 << 10
			st := e.r.cache.ObjectStats([]blockcache.ObjectID{e.pf.files["model.safetensors"].cacheID()})[0]
			last := (end + 2*bs - 1) / bs // of the overshoot
			for i := last + 1; i <= int64(len(model))/bs; i++ {
				if st.Cached.Has(i) || st.Pending.Has(i) {
					t.Errorf("block %d, past the tensor's last and the overshoot (%d), was fetched or asked for", i, last)
				}
			}
		})
	}
}

// A header chunk tells where the file's tensors end, for either format,
// when the header lies within it, and nothing otherwise.
func TestTensorEndsFromTheChunk(t *testing.T) {
	st := formattest.WriteSafetensors(t,
		formattest.SafetensorsTensor{Name: "b", DType: "F32", Shape: []int64{16}},
		formattest.SafetensorsTensor{Name: "a", DType: "F16", Shape: []int64{8}})
	size := int64(len(st.Data))
	if got, want := tensorEnds("m.safetensors", st.Data[:st.Header], size), []int64{st.Offsets["b"][1], st.Offsets["a"][1]}; !slices.Equal(got, want) {
		t.Errorf("safetensors: ends %v, want %v", got, want)
	}
	if got := tensorEnds("m.safetensors", st.Data[:st.Header/2], size); got != nil {
		t.Errorf("a chunk short of the header: ends %v, want none", got)
	}
	if got := tensorEnds("m.bin", st.Data, size); got != nil {
		t.Errorf("a file of no known format: ends %v, want none", got)
	}
	g := formattest.WriteGGUF(t, 32, formattest.LlamaGGUFTensors[0], formattest.LlamaGGUFTensors[4])
	var want []int64
	for _, tt := range []formattest.GGUFTensor{formattest.LlamaGGUFTensors[0], formattest.LlamaGGUFTensors[4]} {
		want = append(want, g.Offsets[tt.Name]+int64(tt.Size))
	}
	slices.Sort(want)
	if got := tensorEnds("m.gguf", g.Data[:g.DataStart], int64(len(g.Data))); !slices.Equal(got, want) {
		t.Errorf("GGUF: ends %v, want %v", got, want)
	}
}
