package prefetch

import (
	"sync"
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
}

// Follower walks a plan (an ordered list of ranges) ahead of the reader.
// Every read that lands in the plan moves the reader's position to that
// point, and the follower keeps the next Window bytes of the plan
// requested. Reads outside the plan leave it alone (readahead covers
// them), and a reader that skips ahead drags the window along; one that
// goes back is already covered.
type Follower struct {
	plan  []Range
	cum   []int64 // cum[i] = bytes of plan[:i]
	files map[string]FileBlocks
	opts  FollowOptions
	// first plan index touching each block, by file
	at map[string]map[int64]int

	mu      sync.Mutex
	started bool
	reader  int // plan index the reader has reached
	issued  int // plan[:issued] has been requested
}

// NewFollower prepares to follow plan. Nothing is fetched until a read
// lands in the plan; the window then starts at the beginning of the
// checkpoint (Range.Group) that read belongs to, so a loader that reads
// tensors in any order finds the ones before its first read coming too,
// while a reader of one checkpoint gets no window over another. Ranges of
// files not in files are skipped.
func NewFollower(plan []Range, files map[string]FileBlocks, opts FollowOptions) *Follower {
	if opts.Window <= 0 {
		opts.Window = 256 << 20
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = 8 << 20
	}
	f := &Follower{files: files, opts: opts, at: map[string]map[int64]int{}}
	for _, r := range plan {
		if _, ok := files[r.Path]; ok && r.Len > 0 {
			f.plan = append(f.plan, r)
		}
	}
	f.cum = make([]int64, len(f.plan)+1)
	for i, r := range f.plan {
		f.cum[i+1] = f.cum[i] + r.Len
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
	return f
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
		w.f.advance(pos)
	}
}

// advance moves the reader to pos (never back) and tops up the window.
func (f *Follower) advance(pos int) {
	type req struct {
		fb       FileBlocks
		off, len int64
	}
	var reqs []req
	f.mu.Lock()
	if !f.started {
		start := pos
		for start > 0 && f.plan[start-1].Group == f.plan[pos].Group {
			start--
		}
		f.started, f.reader, f.issued = true, start, start
	}
	f.reader = max(f.reader, pos)
	f.issued = max(f.issued, f.reader)
	for f.issued < len(f.plan) && f.cum[f.issued]-f.cum[f.reader] < f.opts.Window {
		r := f.plan[f.issued]
		reqs = append(reqs, req{f.files[r.Path], r.Off, r.Len})
		f.issued++
	}
	f.mu.Unlock()
	for _, r := range reqs {
		r.fb.Prefetch(r.off, r.len)
	}
}
