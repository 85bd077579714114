package prefetch

import (
	"slices"
	"sync"

	"github.com/modelfs/modelfs/modelformat/loadorder"
)

// FileBlocks is one file the Follower prefetches into.
type FileBlocks interface {
	// Prefetch loads [off, off+length) in the background; it must not block.
	Prefetch(off, length int64)
}

// Watcher sees every read of one open file.
type Watcher interface {
	Observe(off, n int64)
}

// FollowOptions bound how far a Follower runs ahead of the reader.
type FollowOptions struct {
	// Window is how many bytes of the plan are kept requested ahead of the
	// reader's position in it (default 256 MiB). Keep it within the cache:
	// the cache drops prefetches it has no room for.
	Window int64
	// BlockSize is the granularity reads are matched to the plan with
	// (default 8 MiB; use the cache's block size).
	BlockSize int64
	// StartWindow is the window while the reader keeps to one file, before
	// it has moved through any of that file's plan (default two blocks):
	// it grows by twice the plan bytes the reader has passed, up to
	// Window. A reader of one tensor costs the link that tensor and a
	// little more, not a Window of the shard; one reading the file
	// through soon has the whole Window.
	StartWindow int64
	// Overshoot is how far past the first range a reader read in a file
	// its reads may be the kernel's readahead rather than the reader going
	// on (default DefaultOvershoot; see ReadaheadOptions.Overshoot):
	// while confined, reads there do not move the reader.
	Overshoot int64
}

// Follower walks a plan (an ordered list of ranges) ahead of the reader.
//
// Until the load is evidently of the whole model, the window covers only
// the files the reader has read: a reader of one shard (a copy, a checksum)
// costs the link that shard and nothing else, although the plan
// interleaves the checkpoint's shards in layer order, and within a file
// the window starts small (StartWindow) and grows as the reader moves
// through the file's plan, so a reader of one tensor costs about that
// tensor. A read of a
// second big file of the plan (isBig), or of a checkpoint's index
// (Range.Indexes), is that evidence: from then on
// every read that lands in the plan moves the reader's position to that
// point, and the next Window bytes of the plan are kept requested, across
// files but within the reader's checkpoint (see followPlan). Reads outside the plan leave it alone (readahead covers them), a
// reader that skips ahead drags the window along, one that goes back is
// already covered, and no range is requested twice.
type Follower struct {
	plan  []loadorder.Range
	cum   []int64 // cum[i] = bytes of plan[:i]
	files map[string]FileBlocks
	opts  FollowOptions
	// first plan index touching each block, by file
	at map[string]map[int64]int
	// plan indexes of each file's ranges, ascending, and their running
	// byte counts (fcum[p][k] = bytes of the file's first k ranges)
	byFile map[string][]int
	fcum   map[string][]int64
	// ends of each file's ranges (Bound)
	ends map[string]Ends
	// the checkpoint indexes' paths (Range.Indexes)
	indexes map[string]bool

	mu      sync.Mutex
	done    []bool // plan[i] has been requested
	early   []bool // plan[i] was requested while confined to the files read
	touched map[string]*fileCursor
	big     string // the first big file read; "" before
	whole   bool   // a second big file was read: follow the whole plan
	started bool
	reader  int // plan index the reader has reached
	issued  int // plan[:issued] has been requested
}

// fileCursor is the reader's place in one file's ranges while the
// follower is confined to the files read.
type fileCursor struct {
	reader, issued int // indexes into byFile[path]
	// first is where the reader came in: the window grows with what it
	// has passed since, not with the ranges before it in the plan, which
	// it has not read.
	first int
}

// NewFollower prepares to follow plan. Nothing is fetched until a read
// lands in the plan; the window then starts at that read, over its file's
// ranges while confined, else over its checkpoint's (Range.Group). Ranges
// before the first read are left to the reader: a loader that reads
// tensors in an order of its own loads them on demand, with the kernel's
// readahead. A reader of one checkpoint gets at most StartWindow of
// another. Ranges of files not in files are skipped.
func NewFollower(plan []loadorder.Range, files map[string]FileBlocks, opts FollowOptions) *Follower {
	if opts.Window <= 0 {
		opts.Window = 256 << 20
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = 8 << 20
	}
	if opts.StartWindow <= 0 {
		opts.StartWindow = 2 * opts.BlockSize
	}
	opts.StartWindow = min(opts.StartWindow, opts.Window)
	if opts.Overshoot <= 0 {
		opts.Overshoot = DefaultOvershoot
	}
	f := &Follower{files: files, opts: opts, at: map[string]map[int64]int{},
		byFile: map[string][]int{}, fcum: map[string][]int64{}, ends: map[string]Ends{}, indexes: map[string]bool{}, touched: map[string]*fileCursor{}}
	for _, r := range plan {
		if _, ok := files[r.Path]; ok && r.Len > 0 {
			f.plan = append(f.plan, r)
		}
	}
	f.cum = make([]int64, len(f.plan)+1)
	f.done = make([]bool, len(f.plan))
	f.early = make([]bool, len(f.plan))
	for i, r := range f.plan {
		f.cum[i+1] = f.cum[i] + r.Len
		if f.fcum[r.Path] == nil {
			f.fcum[r.Path] = []int64{0}
		}
		f.byFile[r.Path] = append(f.byFile[r.Path], i)
		f.fcum[r.Path] = append(f.fcum[r.Path], f.fcum[r.Path][len(f.fcum[r.Path])-1]+r.Len)
		f.ends[r.Path] = append(f.ends[r.Path], r.Off+r.Len)
		if r.Indexes > 0 {
			f.indexes[r.Path] = true
		}
		blocks := f.at[r.Path]
		if blocks == nil {
			blocks = map[int64]int{}
			f.at[r.Path] = blocks
		}
		for b := r.Off / opts.BlockSize; b <= (r.Off+r.Len-1)/opts.BlockSize; b++ {
			if _, seen := blocks[b]; !seen {
				blocks[b] = i
			}
		}
	}
	for path, e := range f.ends {
		f.ends[path] = NewEnds(e)
	}
	return f
}

// Bound returns the end of path's first planned range that ends at or
// after end: where a reader of the range end is in may stop.
func (f *Follower) Bound(path string, end int64) (int64, bool) {
	return f.ends[path].Bound(end)
}

// Whole reports whether the load is evidently of the whole model (a
// second big file was read), when the plan is followed across files.
func (f *Follower) Whole() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.whole
}

// Opened tells the follower that path was opened. Opening a checkpoint's
// index (Range.Indexes) is evidence of a whole-model load, as reading it
// is: its reads may never be seen here (FUSE passthrough serves a file
// complete in the disk cache).
func (f *Follower) Opened(path string) {
	if !f.indexes[path] {
		return
	}
	f.mu.Lock()
	f.whole = true
	f.mu.Unlock()
}

// PlannedBytes is the size of the plan.
func (f *Follower) PlannedBytes() int64 { return f.cum[len(f.plan)] }

// ForFile returns the Watcher to attach to reads of path.
func (f *Follower) ForFile(path string) Watcher {
	blocks := f.at[path]
	if blocks == nil {
		return nil
	}
	return fileWatcher{f: f, blocks: blocks}
}

type fileWatcher struct {
	f      *Follower
	blocks map[int64]int
}

func (w fileWatcher) Observe(off, n int64) {
	bs := w.f.opts.BlockSize
	pos := -1
	for b := off / bs; b <= (off+max(n, 1)-1)/bs; b++ {
		if i, ok := w.blocks[b]; ok && i > pos {
			pos = i
		}
	}
	if pos >= 0 {
		w.f.advance(pos, off)
	}
}

// advance moves the reader to pos (never back), for a read at off, and
// tops up the window.
func (f *Follower) advance(pos int, off int64) {
	var reqs []loadorder.Range
	f.mu.Lock()
	if r := f.plan[pos]; !f.whole && r.Indexes > 0 {
		// A loader reads a checkpoint's index to find its shards, and
		// then loads them all: the load is whole from its first shard,
		// so the window need not wait at that shard's end for the second.
		f.whole = true
	} else if !f.whole && f.isBig(r) {
		if f.big == "" {
			f.big = r.Path
		}
		f.whole = r.Path != f.big
	}
	if f.whole {
		reqs = f.followPlan(pos)
	} else {
		reqs = f.followFile(pos, off)
	}
	f.mu.Unlock()
	for _, r := range reqs {
		f.files[r.Path].Prefetch(r.Off, r.Len)
	}
}

// isBig tells a checkpoint's file (or, in a profile, a file read in more
// than one piece) from a small file read whole: reading small files and
// one big one is still a one-file read.
func (f *Follower) isBig(r loadorder.Range) bool { return r.Group > 0 || len(f.byFile[r.Path]) > 1 }

// followFile tops up the window over the ranges of pos's file only.
func (f *Follower) followFile(pos int, off int64) []loadorder.Range {
	path := f.plan[pos].Path
	list, cum := f.byFile[path], f.fcum[path]
	k, _ := slices.BinarySearch(list, pos)
	c := f.touched[path]
	if c == nil && f.plan[pos].Header {
		// A header: where the reader goes next, not the plan's next
		// range, says which tensor it reads.
		return f.request(nil, pos)
	}
	if c == nil {
		c = &fileCursor{reader: k, issued: k, first: k}
		f.touched[path] = c
	}
	// The kernel reads ahead of a reader that has stopped at the end of
	// the first range it read (a tensor): reads just past it are no sign
	// that the reader goes on. It reads less past a shorter read (see
	// Stream.overshootLocked).
	in := f.plan[list[c.first]]
	if end := in.Off + in.Len; c.reader == c.first && off >= end && off < end+min(f.opts.Overshoot, in.Len/2) {
		return nil
	}
	c.reader = max(c.reader, k)
	c.issued = max(c.issued, c.reader)
	window := min(f.opts.Window, f.opts.StartWindow+2*(cum[c.reader]-cum[c.first]))
	var reqs []loadorder.Range
	for c.issued < len(list) && cum[c.issued]-cum[c.reader] < window {
		if i := list[c.issued]; !f.done[i] {
			f.early[i] = true
		}
		reqs = f.request(reqs, list[c.issued])
		c.issued++
	}
	return reqs
}

// followPlan tops up the window over the plan, within the checkpoint the
// reader is in (Range.Group). A repository may hold a model more than
// once (sharded and consolidated safetensors, several GGUF
// quantizations), and a loader reads one: past the end of its checkpoint
// the window takes only StartWindow of the next, so that a loader that
// does go on (a pipeline of several single-file components) finds its
// first reads there loaded, while one that stops costs the link that
// much, not a Window. A read further on in the plan, in another
// checkpoint, moves the window there.
func (f *Follower) followPlan(pos int) []loadorder.Range {
	if !f.started {
		start := pos
		for start > 0 && f.plan[start-1].Group == f.plan[pos].Group {
			start--
		}
		f.started, f.reader, f.issued = true, start, start
	}
	f.reader = max(f.reader, pos)
	f.issued = max(f.issued, f.reader)
	// What was fetched while the window kept to one file does not fill
	// the window: those ranges are mostly read already.
	group := f.plan[f.reader].Group
	var ahead, spill int64
	for i := f.reader; i < f.issued; i++ {
		if !f.early[i] {
			ahead += f.plan[i].Len
		}
		if group > 0 && f.plan[i].Group != group {
			spill += f.plan[i].Len
		}
	}
	var reqs []loadorder.Range
	for f.issued < len(f.plan) && ahead < f.opts.Window {
		r := f.plan[f.issued]
		if group > 0 && r.Group != group {
			if spill+r.Len > f.opts.StartWindow {
				break
			}
			spill += r.Len
		}
		if !f.early[f.issued] {
			ahead += r.Len
		}
		reqs = f.request(reqs, f.issued)
		f.issued++
	}
	return reqs
}

// request adds plan[i] to reqs unless it was requested before.
func (f *Follower) request(reqs []loadorder.Range, i int) []loadorder.Range {
	if f.done[i] {
		return reqs
	}
	f.done[i] = true
	return append(reqs, f.plan[i])
}
