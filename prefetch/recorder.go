package prefetch

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/modelfs/modelfs/modelformat/loadorder"
)

// DefaultMaxEntries is a Recorder's default MaxEntries: as many as a
// profile holds.
const DefaultMaxEntries = loadorder.MaxProfileEntries

// Recorder collects the ranges first read during a load, block-aligned, in
// first-read order. It is safe for concurrent use and cheap enough to call
// on every read: a read of blocks already recorded costs a lock, a map
// lookup and a binary search.
//
// Each block is recorded once, by the first read touching it. A new range
// that starts where the file's latest entry ends extends that entry
// instead of adding one, so a sequential read of a file is one entry
// however it is interleaved with reads of other files; an entry's place in
// the order is that of its first block.
//
// Memory is bounded: at most MaxEntries entries are kept, and the blocks
// seen are held as merged runs, never more runs than entries. A read that
// would need one more entry stops the recording for good; Truncated then
// reports it.
type Recorder struct {
	// MaxEntries is the most entries kept (default DefaultMaxEntries, and
	// never more than loadorder.MaxProfileEntries). Set it before the first Record.
	MaxEntries int

	bs        int64
	truncated atomic.Bool

	mu       sync.Mutex
	entries  []loadorder.Entry
	files    map[recKey]*recFile
	lastKey  recKey // files[lastKey] == lastFile: skips the map for runs of
	lastFile *recFile
}

type recKey struct{ path, version string }

// recFile is what a Recorder knows of one path+version.
type recFile struct {
	seen []blockRun // sorted, disjoint, never adjacent
	last int        // index of the file's latest entry
}

// blockRun is the blocks [start, end), by index.
type blockRun struct{ start, end int64 }

// NewRecorder returns a Recorder aligning ranges to blockSize (use the
// cache's block size; <= 0 means 8 MiB, the cache's default).
func NewRecorder(blockSize int64) *Recorder {
	if blockSize <= 0 {
		blockSize = 8 << 20
	}
	return &Recorder{MaxEntries: DefaultMaxEntries, bs: blockSize, files: map[recKey]*recFile{}}
}

// Record notes a read of n bytes at off of path at version. Ranges whose
// blocks were all read before add nothing; reads with n <= 0 or off < 0
// are ignored.
func (r *Recorder) Record(path, version string, off, n int64) {
	if n <= 0 || off < 0 || r.truncated.Load() {
		return
	}
	end := off + n
	if end < off { // overflow
		end = math.MaxInt64
	}
	first, stop := off/r.bs, (end-1)/r.bs+1 // blocks [first, stop)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.truncated.Load() {
		return
	}
	key := recKey{path, version}
	f := r.lastFile
	if f == nil || r.lastKey != key {
		f = r.files[key]
		if f == nil {
			f = &recFile{last: -1}
			r.files[key] = f
		}
		r.lastKey, r.lastFile = key, f
	}
	// Walk the runs overlapping [first, stop) and record the gaps.
	i := f.runAfter(first)
	for cur := first; cur < stop; {
		if i < len(f.seen) && f.seen[i].start <= cur {
			cur = f.seen[i].end
			i++
			continue
		}
		gap := stop
		if i < len(f.seen) {
			gap = min(gap, f.seen[i].start)
		}
		if !r.add(f, path, version, cur, gap) {
			return
		}
		i = f.insert(i, cur, gap)
	}
}

// add records blocks [start, end) of f, extending its latest entry when
// contiguous. It reports false, and marks the recorder truncated, when a
// new entry is needed and there is no room.
func (r *Recorder) add(f *recFile, path, version string, start, end int64) bool {
	off := start * r.bs
	stopByte := int64(math.MaxInt64)
	if end <= math.MaxInt64/r.bs {
		stopByte = end * r.bs
	}
	if f.last >= 0 {
		if e := &r.entries[f.last]; e.Off+e.Len == off {
			e.Len = stopByte - e.Off
			return true
		}
	}
	limit := r.MaxEntries
	if limit <= 0 {
		limit = DefaultMaxEntries
	}
	limit = min(limit, loadorder.MaxProfileEntries)
	if len(r.entries) >= limit {
		r.truncated.Store(true)
		return false
	}
	r.entries = append(r.entries, loadorder.Entry{Path: path, Version: version, Off: off, Len: stopByte - off})
	f.last = len(r.entries) - 1
	return true
}

// runAfter returns the index of the first run ending after block b.
func (f *recFile) runAfter(b int64) int {
	lo, hi := 0, len(f.seen)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if f.seen[m].end <= b {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// insert adds the unseen blocks [start, end) before run i, merging with
// the neighbours they touch, and returns the index of the run holding them.
func (f *recFile) insert(i int, start, end int64) int {
	left := i > 0 && f.seen[i-1].end == start
	right := i < len(f.seen) && f.seen[i].start == end
	switch {
	case left && right:
		f.seen[i-1].end = f.seen[i].end
		f.seen = append(f.seen[:i], f.seen[i+1:]...)
		return i - 1
	case left:
		f.seen[i-1].end = end
		return i - 1
	case right:
		f.seen[i].start = start
		return i
	}
	f.seen = append(f.seen, blockRun{})
	copy(f.seen[i+1:], f.seen[i:])
	f.seen[i] = blockRun{start, end}
	return i
}

// Entries returns a copy of the entries recorded so far, in order.
func (r *Recorder) Entries() []loadorder.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]loadorder.Entry, len(r.entries))
	copy(out, r.entries)
	return out
}

// Truncated reports whether recording stopped at MaxEntries: the entries
// are then only the start of the load.
func (r *Recorder) Truncated() bool { return r.truncated.Load() }
