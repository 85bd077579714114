package prefetch

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelfs/modelfs/modelformat/loadorder"
)

// fileRecorder records prefetches of one file.
type fileRecorder struct {
	mu   sync.Mutex
	path string
	log  *[]string
}

func (r *fileRecorder) Prefetch(off, length int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.log = append(*r.log, r.path+":"+itoa(off/mib)+"+"+itoa(length/mib))
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestFollowerKeepsAWindowAheadOfTheReader(t *testing.T) {
	var log []string
	files := map[string]FileBlocks{}
	for _, p := range []string{"a", "b"} {
		files[p] = &fileRecorder{path: p, log: &log}
	}
	// Plan order interleaves two shards, like a layer split across files.
	plan := []loadorder.Range{
		{Path: "a", Off: 0, Len: mib}, {Path: "b", Off: 0, Len: 2 * mib},
		{Path: "a", Off: mib, Len: 2 * mib}, {Path: "b", Off: 2 * mib, Len: mib},
		{Path: "c", Off: 0, Len: mib}, // not mounted: skipped
		{Path: "a", Off: 3 * mib, Len: mib}, {Path: "b", Off: 3 * mib, Len: 4 * mib},
	}
	f := NewFollower(plan, files, FollowOptions{Window: 3 * mib, BlockSize: mib})
	if got := f.PlannedBytes(); got != 11*mib {
		t.Fatalf("planned %d MiB, want 11", got/mib)
	}
	if len(log) != 0 {
		t.Fatalf("prefetched before any read: %v", log)
	}
	f.ForFile("a").Observe(0, 4096) // the reader meets the plan at its start
	// One file read so far: the window covers its ranges only.
	want := []string{"a:0+1", "a:1+2"}
	if !equal(log, want) {
		t.Fatalf("after the first read: %v, want %v", log, want)
	}
	// A read of a second file: the load is of the model, the window spans
	// the plan, nothing is requested twice, and what was fetched of a
	// does not fill the window.
	f.ForFile("b").Observe(0, 4096)
	want = append(want, "b:0+2", "b:2+1")
	if !equal(log, want) {
		t.Fatalf("after reading b: %v, want %v", log, want)
	}
	// The reader reaches plan entry 2 (a at 1 MiB): the window moves there.
	f.ForFile("a").Observe(mib+100, 4096)
	want = append(want, "a:3+1", "b:3+4")
	if !equal(log, want) {
		t.Fatalf("after reading a@1MiB: %v, want %v", log, want)
	}
	// Reading behind the position changes nothing; reads off the plan neither.
	f.ForFile("b").Observe(0, 4096)
	f.ForFile("b").Observe(100*mib, 4096)
	if !equal(log, want) {
		t.Fatalf("reads behind or off the plan prefetched: %v", log)
	}
	if f.ForFile("c") != nil {
		t.Fatal("a watcher for a file not in the plan")
	}
	// Skipping to the last entry, already requested, requests nothing.
	f.ForFile("b").Observe(5*mib, 4096)
	if !equal(log, want) {
		t.Fatalf("after skipping ahead: %v, want %v", log, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A reader of one shard of a checkpoint gets that shard prefetched, in
// plan order, and nothing of the other shards although the plan
// interleaves them; small files read first change nothing.
func TestFollowerStaysInTheFileUntilASecondIsRead(t *testing.T) {
	var log []string
	files := map[string]FileBlocks{}
	for _, p := range []string{"config.json", "s1", "s2"} {
		files[p] = &fileRecorder{path: p, log: &log}
	}
	plan := []loadorder.Range{
		{Path: "config.json", Off: 0, Len: mib},
		{Path: "s1", Off: 0, Len: mib, Group: 1}, {Path: "s2", Off: 0, Len: mib, Group: 1},
		{Path: "s1", Off: mib, Len: 2 * mib, Group: 1}, {Path: "s2", Off: mib, Len: 2 * mib, Group: 1},
		{Path: "s1", Off: 3 * mib, Len: 2 * mib, Group: 1}, {Path: "s2", Off: 3 * mib, Len: 2 * mib, Group: 1},
	}
	// Shards this small lie within the kernel's readahead: see
	// TestFollowerIgnoresTheKernelsReadahead.
	f := NewFollower(plan, files, FollowOptions{Window: 4 * mib, BlockSize: mib, Overshoot: mib / 2})
	f.ForFile("config.json").Observe(0, 100)
	f.ForFile("s1").Observe(0, 8)
	// The window in one file starts at two blocks.
	want := []string{"config.json:0+1", "s1:0+1", "s1:1+2"}
	if !equal(log, want) {
		t.Fatalf("reading config.json and s1: %v, want %v", log, want)
	}
	for off := int64(0); off < 5*mib; off += mib / 2 {
		f.ForFile("s1").Observe(off, mib/2)
	}
	want = append(want, "s1:3+2")
	if !equal(log, want) {
		t.Fatalf("reading s1 through: %v, want %v", log, want)
	}
	if f.Whole() {
		t.Fatal("a reader of one shard made the load whole-model")
	}
	// The second shard: from here the plan is followed across files.
	f.ForFile("s2").Observe(0, 8)
	if !f.Whole() {
		t.Fatal("a read of a second shard did not make the load whole-model")
	}
	// s1, fetched while the window kept to it, does not fill the window.
	want = append(want, "s2:0+1", "s2:1+2", "s2:3+2")
	if !equal(log, want) {
		t.Fatalf("after reading s2: %v, want %v", log, want)
	}
}

// A reader of a checkpoint's index then loads its shards, all of them:
// from its first shard the plan is followed across files, so the second
// shard is under way before the first is read through.
func TestFollowerGoesWholeAtTheIndex(t *testing.T) {
	var log []string
	files := map[string]FileBlocks{}
	for _, p := range []string{"config.json", "index.json", "s1", "s2"} {
		files[p] = &fileRecorder{path: p, log: &log}
	}
	plan := []loadorder.Range{
		{Path: "config.json", Off: 0, Len: mib},
		{Path: "index.json", Off: 0, Len: mib, Indexes: 1},
		{Path: "s1", Off: 0, Len: mib, Group: 1, Header: true}, {Path: "s2", Off: 0, Len: mib, Group: 1, Header: true},
		{Path: "s1", Off: mib, Len: 2 * mib, Group: 1}, {Path: "s2", Off: mib, Len: 2 * mib, Group: 1},
		{Path: "s1", Off: 3 * mib, Len: 2 * mib, Group: 1}, {Path: "s2", Off: 3 * mib, Len: 2 * mib, Group: 1},
	}
	f := NewFollower(plan, files, FollowOptions{Window: 4 * mib, BlockSize: mib, Overshoot: mib / 2})
	f.ForFile("config.json").Observe(0, 100)
	if f.Whole() {
		t.Fatal("a read of config.json made the load whole-model")
	}
	f.ForFile("index.json").Observe(0, 100)
	if !f.Whole() {
		t.Fatal("a read of the checkpoint's index did not make the load whole-model")
	}
	f.ForFile("s1").Observe(0, 8)
	if !slices.ContainsFunc(log, func(s string) bool { return strings.HasPrefix(s, "s2:") }) {
		t.Fatalf("reading the index and s1's header requested %v: nothing of s2", log)
	}

	// An index served by passthrough is opened but never read here.
	g := NewFollower(plan, files, FollowOptions{Window: 4 * mib, BlockSize: mib, Overshoot: mib / 2})
	g.Opened("config.json")
	g.Opened("s1")
	if g.Whole() {
		t.Fatal("opening config.json and a shard made the load whole-model")
	}
	g.Opened("index.json")
	if !g.Whole() {
		t.Fatal("opening the checkpoint's index did not make the load whole-model")
	}
}

// A reader of one tensor of a big file (time to first tensor) gets that
// tensor and the window's start, not a whole window of the file; the
// window grows as the reader moves through the file's plan.
func TestFollowerWindowInAFileGrowsWithTheReader(t *testing.T) {
	var log []string
	files := map[string]FileBlocks{"s1": &fileRecorder{path: "s1", log: &log}}
	var plan []loadorder.Range
	for i := range int64(16) {
		plan = append(plan, loadorder.Range{Path: "s1", Off: 4 * i * mib, Len: 4 * mib, Group: 1})
	}
	// Overshoot is a block here: reads past the first tensor move the
	// reader (see TestFollowerIgnoresTheKernelsReadahead).
	f := NewFollower(plan, files, FollowOptions{Window: 32 * mib, BlockSize: mib, Overshoot: mib})
	f.ForFile("s1").Observe(0, 8)
	if want := []string{"s1:0+4"}; !equal(log, want) {
		t.Fatalf("after reading the first tensor's start: %v, want %v", log, want)
	}
	// The reader in the second tensor, past the overshoot, has passed
	// 4 MiB of the plan: the window is 2 + 2×4 MiB ahead of it.
	f.ForFile("s1").Observe(5*mib, 8)
	if want := []string{"s1:0+4", "s1:4+4", "s1:8+4", "s1:12+4"}; !equal(log, want) {
		t.Fatalf("after reading into the second tensor: %v, want %v", log, want)
	}
	// In the fourth tensor, 12 MiB passed: the window is 2 + 24 MiB.
	f.ForFile("s1").Observe(12*mib, 8)
	if n := len(log); n != 10 || log[n-1] != "s1:36+4" {
		t.Fatalf("after reading into the fourth tensor: %v, want the ranges to 36 MiB (a 26 MiB window from 12 MiB)", log)
	}
	// Further on it is the whole Window, here the rest of the file.
	f.ForFile("s1").Observe(40*mib, 8)
	if n := len(log); n != 16 || log[n-1] != "s1:60+4" {
		t.Fatalf("after reading into the eleventh tensor: %v, want every range", log)
	}
}

// Reads just past the tensor a reader came in on may be the kernel's
// readahead after the reader stopped: within Overshoot they do not move
// the reader, so the plan fetches nothing more; a read beyond does.
func TestFollowerIgnoresTheKernelsReadahead(t *testing.T) {
	var log []string
	files := map[string]FileBlocks{"s1": &fileRecorder{path: "s1", log: &log}}
	plan := []loadorder.Range{{Path: "s1", Off: 0, Len: 8 * mib, Group: 1}}
	for i := range int64(16) {
		plan = append(plan, loadorder.Range{Path: "s1", Off: 8*mib + 2*i*mib, Len: 2 * mib, Group: 1})
	}
	f := NewFollower(plan, files, FollowOptions{Window: 32 * mib, BlockSize: mib, Overshoot: 4 * mib})
	w := f.ForFile("s1")
	w.Observe(0, mib)
	if want := []string{"s1:0+8"}; !equal(log, want) {
		t.Fatalf("after reading into the first tensor: %v, want %v", log, want)
	}
	for off := int64(mib); off < 12*mib; off += mib {
		w.Observe(off, mib)
	}
	if want := []string{"s1:0+8"}; !equal(log, want) {
		t.Fatalf("after reads up to 4 MiB past the first tensor: %v, want nothing more", log)
	}
	w.Observe(12*mib, mib)
	if len(log) < 3 || log[1] != "s1:12+2" {
		t.Fatalf("after a read 4 MiB past the first tensor: %v, want the plan followed from 12 MiB", log)
	}
}

// A whole-model load of one checkpoint takes at most StartWindow of
// another (a repository's other copy of the model) when it reaches its
// end, however large the window; a read in the other checkpoint moves the
// window there.
func TestFollowerStaysInTheCheckpoint(t *testing.T) {
	var log []string
	files := map[string]FileBlocks{}
	for _, p := range []string{"s1", "s2", "q4.gguf"} {
		files[p] = &fileRecorder{path: p, log: &log}
	}
	plan := []loadorder.Range{
		{Path: "s1", Off: 0, Len: mib, Group: 1, Header: true}, {Path: "s2", Off: 0, Len: mib, Group: 1, Header: true},
		{Path: "s1", Off: mib, Len: 2 * mib, Group: 1}, {Path: "s2", Off: mib, Len: 2 * mib, Group: 1},
		{Path: "q4.gguf", Off: 0, Len: mib, Group: 2, Header: true},
		{Path: "q4.gguf", Off: mib, Len: mib, Group: 2}, {Path: "q4.gguf", Off: 2 * mib, Len: 4 * mib, Group: 2},
		{Path: "q4.gguf", Off: 6 * mib, Len: mib, Group: 2},
	}
	f := NewFollower(plan, files, FollowOptions{Window: 64 * mib, BlockSize: mib, StartWindow: 2 * mib, Overshoot: mib / 2})
	f.ForFile("s1").Observe(mib, 4096)
	f.ForFile("s2").Observe(mib, 4096) // a second shard: the whole checkpoint
	f.ForFile("s2").Observe(2*mib, 4096)
	// The checkpoint, then the other's first 2 MiB: its header and first
	// tensor, not the 4 MiB one after them.
	want := []string{"s1:1+2", "s2:1+2", "q4.gguf:0+1", "q4.gguf:1+1"}
	if !equal(log, want) {
		t.Fatalf("after reading the first checkpoint: %v, want %v", log, want)
	}
	f.ForFile("q4.gguf").Observe(mib, 4096) // the loader goes on
	want = append(want, "q4.gguf:2+4", "q4.gguf:6+1")
	if !equal(log, want) {
		t.Fatalf("after a read in the second checkpoint: %v, want %v", log, want)
	}
}
