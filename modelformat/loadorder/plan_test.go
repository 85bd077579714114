package loadorder

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/modelfs/modelfs/modelformat/formattest"
)

// openLog records the readers memFiles opened, from Plan's goroutines.
type openLog struct {
	mu      sync.Mutex
	readers []*formattest.StrictReader
}

// memFile is a File over data; opened, if not nil, records its readers.
func memFile(tb testing.TB, p string, data []byte, opened *openLog) File {
	return File{Path: p, Size: int64(len(data)), Open: func() (io.ReaderAt, error) {
		r := formattest.NewStrict(tb, data)
		if opened != nil {
			opened.mu.Lock()
			opened.readers = append(opened.readers, r)
			opened.mu.Unlock()
		}
		return r, nil
	}}
}

// unopenable is a File that Plan must not read.
func unopenable(tb testing.TB, p string, size int64) File {
	return File{Path: p, Size: size, Open: func() (io.ReaderAt, error) {
		tb.Errorf("Plan opened %s", p)
		return nil, errors.New("must not open")
	}}
}

func rangesString(rs []Range) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n  %s [%d, +%d) %s", r.Path, r.Off, r.Len, r.Tensor)
	}
	return b.String()
}

// checkRanges compares plans without their Group numbers, and checks the
// groups on their own: never decreasing, one per file.
// groupOfPath is the Group of path's ranges in plan.
func groupOfPath(plan []Range, path string) int {
	for _, r := range plan {
		if r.Path == path {
			return r.Group
		}
	}
	return -1
}

func checkRanges(t *testing.T, got, want []Range) {
	t.Helper()
	groupOf := map[string]int{}
	last := 0
	bare := make([]Range, len(got))
	for i, r := range got {
		if r.Group < last {
			t.Fatalf("group %d after group %d at %s", r.Group, last, r.Path)
		}
		if g, ok := groupOf[r.Path]; ok && g != r.Group {
			t.Fatalf("%s is in groups %d and %d", r.Path, g, r.Group)
		}
		groupOf[r.Path], last = r.Group, r.Group
		// A checkpoint file's range without a tensor is its header.
		if want := r.Group > 0 && r.Tensor == ""; r.Header != want || (r.Header && r.Off != 0) {
			t.Fatalf("%s [%d, +%d) %q: Header %v", r.Path, r.Off, r.Len, r.Tensor, r.Header)
		}
		r.Group, r.Header, r.Indexes = 0, false, 0
		bare[i] = r
	}
	if !slices.Equal(bare, want) {
		t.Fatalf("plan:%s\nwant:%s", rangesString(got), rangesString(want))
	}
}

// A sharded Llama-style checkpoint whose layers are split across three
// shards with unusual names, so that only the index can tie them together.
func TestPlanShardedSafetensors(t *testing.T) {
	f32 := func(name string, n int64) formattest.SafetensorsTensor {
		return formattest.SafetensorsTensor{Name: name, DType: "F32", Shape: []int64{n}}
	}
	a := formattest.WriteSafetensors(t, f32("model.embed_tokens.weight", 16), f32("model.layers.0.mlp.weight", 8), f32("model.layers.1.attn.weight", 4))
	b := formattest.WriteSafetensors(t, f32("model.layers.0.attn.weight", 4), f32("model.layers.1.mlp.weight", 8), f32("model.layers.2.attn.weight", 4))
	c := formattest.WriteSafetensors(t, f32("lm_head.weight", 16), f32("model.layers.2.mlp.weight", 8), f32("model.norm.weight", 2))
	extra := formattest.WriteSafetensors(t, f32("model.norm.weight", 2), f32("model.embed_tokens.weight", 16))
	index := []byte(`{"metadata": {"total_size": 300}, "weight_map": {
		"lm_head.weight": "c.safetensors",
		"model.embed_tokens.weight": "a.safetensors",
		"model.layers.0.attn.weight": "b.safetensors",
		"model.layers.0.mlp.weight": "a.safetensors",
		"model.layers.1.attn.weight": "a.safetensors",
		"model.layers.1.mlp.weight": "b.safetensors",
		"model.layers.2.attn.weight": "b.safetensors",
		"model.layers.2.mlp.weight": "c.safetensors",
		"model.norm.weight": "c.safetensors",
		"model.gone.weight": "missing.safetensors"}}`)
	config := []byte(`{"architectures": ["LlamaForCausalLM"]}`)
	tokenizer := []byte(`{"model": {"type": "BPE"}}`)

	var opened openLog
	files := []File{
		memFile(t, "w/extra.safetensors", extra.Data, &opened),
		memFile(t, "w/c.safetensors", c.Data, &opened),
		memFile(t, "w/b.safetensors", b.Data, &opened),
		memFile(t, "w/a.safetensors", a.Data, &opened),
		memFile(t, "w/model.safetensors.index.json", index, &opened),
		memFile(t, "tokenizer.json", tokenizer, &opened),
		memFile(t, "w/config.json", config, &opened),
		unopenable(t, "original/consolidated.pth", 1<<30),
		unopenable(t, "empty.txt", 0),
	}
	got, err := Plan(files, PlanOptions{SmallFile: 100, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	tr := func(p string, st formattest.SafetensorsFile, name string) Range {
		o := st.Offsets[name]
		return Range{Path: p, Off: o[0], Len: o[1] - o[0], Tensor: name}
	}
	checkRanges(t, got, []Range{
		{Path: "w/config.json", Len: int64(len(config))},
		{Path: "tokenizer.json", Len: int64(len(tokenizer))},
		{Path: "w/model.safetensors.index.json", Len: int64(len(index))},
		{Path: "w/a.safetensors", Len: a.Header},
		{Path: "w/b.safetensors", Len: b.Header},
		{Path: "w/c.safetensors", Len: c.Header},
		tr("w/a.safetensors", a, "model.embed_tokens.weight"),
		tr("w/a.safetensors", a, "model.layers.0.mlp.weight"),
		tr("w/b.safetensors", b, "model.layers.0.attn.weight"),
		tr("w/a.safetensors", a, "model.layers.1.attn.weight"),
		tr("w/b.safetensors", b, "model.layers.1.mlp.weight"),
		tr("w/b.safetensors", b, "model.layers.2.attn.weight"),
		tr("w/c.safetensors", c, "model.layers.2.mlp.weight"),
		tr("w/c.safetensors", c, "model.norm.weight"),
		tr("w/c.safetensors", c, "lm_head.weight"),
		// Not in the index: a checkpoint of its own.
		{Path: "w/extra.safetensors", Len: extra.Header},
		tr("w/extra.safetensors", extra, "model.embed_tokens.weight"),
		tr("w/extra.safetensors", extra, "model.norm.weight"),
	})
	// The index names the checkpoint it lists; nothing else is an index.
	for _, r := range got {
		want := 0
		if r.Path == "w/model.safetensors.index.json" {
			want = groupOfPath(got, "w/a.safetensors")
		}
		if r.Indexes != want {
			t.Errorf("%s: Indexes %d, want %d", r.Path, r.Indexes, want)
		}
	}
	// Whole small files are fetched, not opened; the index and the big
	// files are opened once each, and closed.
	if len(opened.readers) != 5 {
		t.Errorf("Plan opened %d readers, want 5 (index and 4 shards)", len(opened.readers))
	}
	for _, r := range opened.readers {
		if !r.Closed() {
			t.Errorf("a reader was not closed")
		}
	}
}

// Without an index, files named -NNNNN-of-MMMMM are one checkpoint.
func TestPlanShardNamesWithoutIndex(t *testing.T) {
	f16 := func(name string) formattest.SafetensorsTensor {
		return formattest.SafetensorsTensor{Name: name, DType: "F16", Shape: []int64{8}}
	}
	s1 := formattest.WriteSafetensors(t, f16("model.layers.1.w"), f16("model.embed_tokens.weight"))
	s2 := formattest.WriteSafetensors(t, f16("model.layers.0.w"), f16("lm_head.weight"))
	other := formattest.WriteSafetensors(t, f16("model.layers.0.w"))
	files := []File{
		memFile(t, "model-00002-of-00002.safetensors", s2.Data, nil),
		memFile(t, "model-00001-of-00002.safetensors", s1.Data, nil),
		memFile(t, "other-00001-of-00002.safetensors", other.Data, nil),
	}
	got, err := Plan(files, PlanOptions{SmallFile: 10})
	if err != nil {
		t.Fatal(err)
	}
	var paths, tensors []string
	for _, r := range got {
		paths = append(paths, r.Path)
		tensors = append(tensors, r.Tensor)
	}
	wantTensors := []string{"", "", "model.embed_tokens.weight", "model.layers.0.w", "model.layers.1.w", "lm_head.weight", "", "model.layers.0.w"}
	wantPaths := []string{
		"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
		"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
		"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
		"other-00001-of-00002.safetensors", "other-00001-of-00002.safetensors",
	}
	if !slices.Equal(tensors, wantTensors) || !slices.Equal(paths, wantPaths) {
		t.Fatalf("plan:%s", rangesString(got))
	}
}

// An invalid file is left out and named in the error; the rest is planned.
func TestPlanReportsBadFilesAndPlansTheRest(t *testing.T) {
	good := formattest.WriteSafetensors(t, formattest.SafetensorsTensor{Name: "w", DType: "U8", Shape: []int64{64}})
	bad := formattest.RawSafetensors(`{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}`, 4)
	files := []File{
		memFile(t, "good.safetensors", good.Data, nil),
		memFile(t, "sub/bad.safetensors", bad, nil),
		{Path: "noopen.gguf", Size: 100},
		{Path: "broken.gguf", Size: 100, Open: func() (io.ReaderAt, error) { return nil, errors.New("store down") }},
	}
	got, err := Plan(files, PlanOptions{SmallFile: 1})
	for _, want := range []string{"sub/bad.safetensors", "F33", "noopen.gguf", "broken.gguf: open: store down"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
	checkRanges(t, got, []Range{
		{Path: "good.safetensors", Len: good.Header},
		{Path: "good.safetensors", Off: good.Header, Len: 64, Tensor: "w"},
	})
}

func TestPlanBadIndex(t *testing.T) {
	_, err := Plan([]File{memFile(t, "model.safetensors.index.json", []byte(`{"weight_map": [`), nil)}, PlanOptions{})
	if err == nil || !strings.Contains(err.Error(), "model.safetensors.index.json") {
		t.Fatalf("bad index: error %v", err)
	}
	// An index larger than MaxHeader is not read at all.
	_, err = Plan([]File{unopenable(t, "model.safetensors.index.json", 1<<40)}, PlanOptions{})
	if err == nil {
		t.Fatal("huge index accepted")
	}
}

// Many shards are read in parallel (run with -race).
func TestPlanParallelHeaders(t *testing.T) {
	var files []File
	for i := range 20 {
		st := formattest.WriteSafetensors(t, formattest.SafetensorsTensor{Name: fmt.Sprintf("model.layers.%d.w", i), DType: "I32", Shape: []int64{4, 4}})
		files = append(files, memFile(t, fmt.Sprintf("model-%05d-of-00020.safetensors", i+1), st.Data, nil))
	}
	got, err := Plan(files, PlanOptions{SmallFile: 1, Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 40 {
		t.Fatalf("plan has %d ranges, want 40", len(got))
	}
	for i := range 20 {
		if r := got[20+i]; r.Tensor != fmt.Sprintf("model.layers.%d.w", i) || r.Len != 64 {
			t.Fatalf("range %d is %+v", 20+i, r)
		}
	}
}

// The shards' headers are read while the index is: each is a round trip
// to the store, and neither needs the other. The index's read here waits
// until a shard's header has been opened; read in turn, the plan would
// never finish.
func TestPlanReadsHeadersBesideTheIndex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f32 := formattest.SafetensorsTensor{Name: "model.layers.0.w", DType: "F32", Shape: []int64{4}}
		shard := formattest.WriteSafetensors(t, f32)
		index := []byte(`{"weight_map": {"model.layers.0.w": "model-00001-of-00001.safetensors"}}`)
		headerOpened := make(chan struct{})
		files := []File{
			{Path: "model.safetensors.index.json", Size: int64(len(index)), Open: func() (io.ReaderAt, error) {
				<-headerOpened
				return formattest.NewStrict(t, index), nil
			}},
			{Path: "model-00001-of-00001.safetensors", Size: int64(len(shard.Data)), Open: func() (io.ReaderAt, error) {
				close(headerOpened)
				return formattest.NewStrict(t, shard.Data), nil
			}},
		}
		got, err := Plan(files, PlanOptions{SmallFile: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].Indexes != got[2].Group || got[2].Tensor != f32.Name {
			t.Fatalf("plan: %s", rangesString(got))
		}
	})
}

// gatedReader holds a header's first read past the length field until
// the gate opens, and counts the parses under way meanwhile.
type gatedReader struct {
	*formattest.StrictReader
	gate           chan struct{}
	active, most   *atomic.Int64
	started, ended bool
}

func (r *gatedReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= 8 && !r.started { // past the length field
		r.started = true
		if n := r.active.Add(1); n > r.most.Load() {
			r.most.Store(n)
		}
		<-r.gate
	}
	return r.StrictReader.ReadAt(p, off)
}

func (r *gatedReader) Close() error {
	if r.started && !r.ended {
		r.ended = true
		r.active.Add(-1)
	}
	return r.StrictReader.Close()
}

// A budget shared by two Plans (two models) bounds the header bytes
// parsed at once across both, whatever Parallel allows.
func TestHeaderBudgetBoundsParsesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var active, most atomic.Int64
		gate := make(chan struct{})
		model := func(name string) []File {
			var files []File
			for i := range 4 {
				st := formattest.WriteSafetensors(t, formattest.SafetensorsTensor{Name: fmt.Sprintf("%s.layers.%d.w", name, i), DType: "I32", Shape: []int64{4, 4}})
				files = append(files, File{Path: fmt.Sprintf("%s-%05d-of-00004.safetensors", name, i+1), Size: int64(len(st.Data)),
					Open: func() (io.ReaderAt, error) {
						return &gatedReader{StrictReader: formattest.NewStrict(t, st.Data), gate: gate, active: &active, most: &most}, nil
					}})
			}
			return files
		}
		hdr := formattest.WriteSafetensors(t, formattest.SafetensorsTensor{Name: "a.layers.0.w", DType: "I32", Shape: []int64{4, 4}}).Header - 8
		budget := NewHeaderBudget(3*hdr + hdr/2) // three headers' worth
		plans := make(chan error, 2)
		for _, name := range []string{"a", "b"} {
			go func() {
				got, err := Plan(model(name), PlanOptions{SmallFile: 1, Parallel: 8, Budget: budget})
				if err == nil && len(got) != 8 {
					err = fmt.Errorf("plan of %s has %d ranges, want 8", name, len(got))
				}
				plans <- err
			}()
		}
		synctest.Wait()
		if n := active.Load(); n != 3 {
			t.Errorf("%d headers parsed at once, want the 3 the budget holds", n)
		}
		close(gate)
		for range 2 {
			if err := <-plans; err != nil {
				t.Error(err)
			}
		}
		if n := most.Load(); n > 3 {
			t.Errorf("%d headers were parsed at once", n)
		}
	})
}

// What a Plan keeps of its files' tensors is bounded: files past the
// bound are left out with an error, the others planned.
func TestPlanBoundsTensorsKept(t *testing.T) {
	var files []File
	for i := range 4 {
		var ts []formattest.SafetensorsTensor
		for j := range 10 {
			ts = append(ts, formattest.SafetensorsTensor{Name: fmt.Sprintf("model.layers.%d.w%d", i, j), DType: "U8", Shape: []int64{1}})
		}
		files = append(files, memFile(t, fmt.Sprintf("model-%05d-of-00004.safetensors", i+1), formattest.WriteSafetensors(t, ts...).Data, nil))
	}
	// Room for two files of 10 tensors of about 20-byte names.
	got, err := Plan(files, PlanOptions{SmallFile: 1, Parallel: 1, MaxKept: 2 * 10 * (planTensorCost + 24)})
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("error %v, want files over the bound", err)
	}
	if tensors := len(got) - 2; tensors != 20 {
		t.Errorf("plan has %d tensors, want those of the 2 files that fit", tensors)
	}
}
