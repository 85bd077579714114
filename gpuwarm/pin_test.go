package gpuwarm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/modelformat/loadorder"
	"github.com/modelfs/modelfs/tests/mountproc"
)

// layeredModel is stored out of layer order, so that pinning in layer
// order is visible in which pages are resident.
var layeredModel = []tensor{
	{"lm_head.weight", tensorPages},
	{"model.layers.1.mlp.weight", tensorPages},
	{"model.layers.0.mlp.weight", tensorPages},
	{"model.embed_tokens.weight", tensorPages},
	{"model.norm.weight", tensorPages},
}

// tensorPages makes the file bigger than prefetch's small-file size (1 MiB)
// with 4 KiB pages, which would otherwise read it whole.
const tensorPages = 64

func planOf(t *testing.T, dir string) ([]loadorder.Range, map[string]int64) {
	t.Helper()
	files, err := modelFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := loadorder.Plan(files, loadorder.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{}
	for _, f := range files {
		sizes[f.Path] = f.Size
	}
	return plan, sizes
}

func TestPinLayerOrderResidency(t *testing.T) {
	dir := t.TempDir()
	offsets, size := testModel(t, dir, layeredModel)
	ps := int64(os.Getpagesize())
	plan, sizes := planOf(t, dir)
	if got := tensorBytes(plan); got != 5*tensorPages*ps {
		t.Fatalf("tensor bytes %d, want %d", got, 5*tensorPages*ps)
	}

	// config.json (1 page), the header (1 page), then the embeddings and
	// layer 0 in layer order.
	budget := (1 + 1 + 2*tensorPages) * ps
	var progress atomic.Int64
	p := newPinner()
	p.chunk = 8 * ps // several mlock calls per tensor, across workers
	set, rep, err := p.pin(context.Background(), dir, plan, sizes, budget, &progress, discard)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Bytes != budget || progress.Load() != budget {
		t.Fatalf("pinned %d bytes (progress %d), want %d", rep.Bytes, progress.Load(), budget)
	}
	if want := ps + size; rep.PlannedBytes != want {
		t.Errorf("planned %d bytes, want %d (config page + whole model)", rep.PlannedBytes, want)
	}
	if rep.Files != 2 || rep.BytesPerSec <= 0 || rep.Memlock == "" {
		t.Errorf("report %+v", rep)
	}

	model := filepath.Join(dir, "model.safetensors")
	mountproc.DropCache(t, model) // evicts whatever is not locked
	res := mountproc.Resident(t, model)
	page := func(name string) int { return int(offsets[name] / ps) }
	check := func(name string, want bool) {
		t.Helper()
		for i := page(name); i < page(name)+tensorPages; i++ {
			if res[i] != want {
				t.Fatalf("%s page %d resident=%v, want %v", name, i-page(name), res[i], want)
			}
		}
	}
	if !res[0] {
		t.Error("header page not resident")
	}
	check("model.embed_tokens.weight", true)
	check("model.layers.0.mlp.weight", true)
	if evictable(t, dir) {
		check("model.layers.1.mlp.weight", false)
		check("lm_head.weight", false)
		check("model.norm.weight", false)
	}

	if err := set.release(); err != nil {
		t.Fatal(err)
	}
	if err := set.release(); err != nil {
		t.Fatal("second release:", err)
	}
	if evictable(t, dir) {
		mountproc.DropCache(t, model)
		if slices.Contains(mountproc.Resident(t, model), true) {
			t.Error("pages still resident after release")
		}
	}
}

func TestPinAll(t *testing.T) {
	dir := t.TempDir()
	_, size := testModel(t, dir, layeredModel)
	plan, sizes := planOf(t, dir)
	set, rep, err := newPinner().pin(context.Background(), dir, plan, sizes, PinAll, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer set.release()
	ps := int64(os.Getpagesize())
	if rep.Bytes != size+ps || rep.Bytes != rep.PlannedBytes {
		t.Fatalf("pinned %d of %d planned, want %d", rep.Bytes, rep.PlannedBytes, size+ps)
	}
	model := filepath.Join(dir, "model.safetensors")
	mountproc.DropCache(t, model)
	for i, r := range mountproc.Resident(t, model) {
		if !r {
			t.Fatalf("page %d not resident", i)
		}
	}
}

func TestPinPieces(t *testing.T) {
	const ps = 4096
	sizes := map[string]int64{"a": 10*ps + 100, "b": 3 * ps}
	plan := []loadorder.Range{
		{Path: "a", Off: 100, Len: 50},          // page 0
		{Path: "a", Off: 200, Len: ps},          // pages 0-1: only 1 is new
		{Path: "missing", Off: 0, Len: ps},      // skipped
		{Path: "a", Off: 10*ps + 50, Len: 1000}, // last page, partial: cut at the file's end
		{Path: "b", Off: 0, Len: 3 * ps},        // cut by the budget
		{Path: "a", Off: 0, Len: 10*ps + 100},   // the rest of a: over budget
	}
	pieces, planned := pinPieces(plan, sizes, ps, 5*ps)
	want := []piece{{"a", 0, ps}, {"a", ps, 2 * ps}, {"a", 10 * ps, 11 * ps}, {"b", 0, 2 * ps}}
	if !slices.Equal(pieces, want) {
		t.Errorf("pieces %v, want %v", pieces, want)
	}
	if planned != 11*ps+3*ps {
		t.Errorf("planned %d, want %d", planned, 14*ps)
	}
	all, _ := pinPieces(plan, sizes, ps, PinAll)
	var n int64
	for _, p := range all {
		n += p.end - p.off
	}
	if n != 14*ps {
		t.Errorf("PinAll pins %d, want %d", n, 14*ps)
	}
	if none, _ := pinPieces(plan, sizes, ps, ps-1); len(none) != 0 {
		t.Errorf("a budget under a page pins %v", none)
	}
}

func TestIntervalsClaim(t *testing.T) {
	var x intervals
	steps := []struct {
		s, e int64
		new  [][2]int64
	}{
		{10, 20, [][2]int64{{10, 20}}},
		{30, 40, [][2]int64{{30, 40}}},
		{15, 35, [][2]int64{{20, 30}}},
		{0, 50, [][2]int64{{0, 10}, {40, 50}}},
		{5, 45, nil},
		{50, 60, [][2]int64{{50, 60}}}, // adjacent: merged
	}
	for _, st := range steps {
		if got := x.claim(st.s, st.e); !slices.Equal(got, st.new) {
			t.Fatalf("claim(%d, %d) = %v, want %v", st.s, st.e, got, st.new)
		}
	}
	if !slices.Equal(x.iv, [][2]int64{{0, 60}}) {
		t.Errorf("intervals %v, want one [0, 60)", x.iv)
	}
}

func TestEnsureMemlock(t *testing.T) {
	const inf = unix.RLIM_INFINITY
	type limits struct{ cur, max uint64 }
	cases := []struct {
		name    string
		cap     bool
		lim     limits
		setErr  error
		need    int64
		wantSet bool
		wantErr string // substring; "" for success
		note    string
	}{
		{name: "capability", cap: true, lim: limits{64 << 10, 64 << 10}, need: 1 << 30, note: "CAP_IPC_LOCK"},
		{name: "unlimited", lim: limits{inf, inf}, need: 1 << 40, note: "unlimited"},
		{name: "within", lim: limits{8 << 20, 8 << 20}, need: 8 << 20, note: "8.0 MiB"},
		{name: "raise soft", lim: limits{8 << 20, inf}, need: 1 << 30, wantSet: true, note: "raised from 8.0 MiB to unlimited"},
		{name: "hard too low", lim: limits{8 << 20, 16 << 20}, need: 1 << 30,
			wantErr: "pinning 1.0 GiB needs RLIMIT_MEMLOCK of at least 1.0 GiB, but the limit is 8.0 MiB (hard limit 16.0 MiB)"},
		{name: "raise refused", lim: limits{8 << 20, 2 << 30}, setErr: unix.EPERM, need: 1 << 30, wantSet: true, wantErr: "ulimit -l"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var set bool
			env := memlockEnv{
				get:        func() (uint64, uint64, error) { return c.lim.cur, c.lim.max, nil },
				set:        func(cur, max uint64) error { set = true; return c.setErr },
				capIPCLock: func() bool { return c.cap },
			}
			note, err := ensureMemlock(c.need, env)
			if set != c.wantSet {
				t.Errorf("setrlimit called: %v, want %v", set, c.wantSet)
			}
			if c.wantErr == "" {
				if err != nil || !strings.Contains(note, c.note) {
					t.Fatalf("got %q, %v; want a note with %q", note, err, c.note)
				}
				return
			}
			if !errors.Is(err, ErrMemlock) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want ErrMemlock with %q", err, c.wantErr)
			}
			for _, hint := range []string{"ulimit -l", "IPC_LOCK", "--pin-bytes"} {
				if !strings.Contains(err.Error(), hint) {
					t.Errorf("error lacks the hint %q: %v", hint, err)
				}
			}
		})
	}
}

// TestPinMemlockTooLow: the limit is checked before anything is mapped.
func TestPinMemlockTooLow(t *testing.T) {
	dir := t.TempDir()
	testModel(t, dir, layeredModel)
	plan, sizes := planOf(t, dir)
	p := newPinner()
	p.memlock = memlockEnv{
		get:        func() (uint64, uint64, error) { return 64 << 10, 64 << 10, nil },
		set:        func(uint64, uint64) error { t.Error("setrlimit called with the hard limit reached"); return nil },
		capIPCLock: func() bool { return false },
	}
	p.mlock = func([]byte) error { t.Error("mlock called"); return nil }
	set, rep, err := p.pin(context.Background(), dir, plan, sizes, PinAll, nil, discard)
	if !errors.Is(err, ErrMemlock) || set != nil {
		t.Fatalf("pin = %v, %v; want ErrMemlock", set, err)
	}
	if !strings.Contains(err.Error(), "64.0 KiB") || rep.PlannedBytes == 0 {
		t.Errorf("error %v, report %+v", err, rep)
	}
}

// TestPinMlockFails: a failed mlock leaves nothing pinned.
func TestPinMlockFails(t *testing.T) {
	dir := t.TempDir()
	testModel(t, dir, layeredModel)
	plan, sizes := planOf(t, dir)
	p := newPinner()
	p.workers = 1
	p.chunk = int64(os.Getpagesize())
	var calls atomic.Int32
	p.mlock = func(b []byte) error {
		if calls.Add(1) == 3 {
			return unix.ENOMEM
		}
		return unix.Mlock(b)
	}
	set, _, err := p.pin(context.Background(), dir, plan, sizes, PinAll, nil, discard)
	if set != nil || !errors.Is(err, unix.ENOMEM) || !strings.Contains(err.Error(), "RLIMIT_MEMLOCK") {
		t.Fatalf("pin = %v, %v; want ENOMEM with a hint", set, err)
	}
	if n := calls.Load(); n > 4 {
		t.Errorf("%d mlock calls after the failure; want the feed to stop", n)
	}
	if evictable(t, dir) {
		model := filepath.Join(dir, "model.safetensors")
		mountproc.DropCache(t, model)
		if slices.Contains(mountproc.Resident(t, model), true) {
			t.Error("pages still resident after a failed pin")
		}
	}
}

func TestPinCancelled(t *testing.T) {
	dir := t.TempDir()
	testModel(t, dir, layeredModel)
	plan, sizes := planOf(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	p := newPinner()
	p.workers = 1
	p.chunk = int64(os.Getpagesize())
	p.mlock = func(b []byte) error { cancel(); return unix.Mlock(b) }
	set, _, err := p.pin(ctx, dir, plan, sizes, PinAll, nil, discard)
	if set != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("pin = %v, %v; want context.Canceled", set, err)
	}
}
