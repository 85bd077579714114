package prefetch

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// Blocks is what a Stream reads from and prefetches into.
type Blocks interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	// ReadSlices returns the bytes in place, valid until release.
	ReadSlices(ctx context.Context, off int64, n int) (slices [][]byte, release func(), err error)
	// Prefetch loads [off, off+length) in the background; it must not block.
	Prefetch(off, length int64)
	Size() int64
}

// ReadaheadOptions bound the readahead window.
type ReadaheadOptions struct {
	// Initial window once a read looks sequential (default 16 MiB).
	Initial int64
	// Max window (default 128 MiB).
	Max int64
	// Slack is how far a read may land from where the last one ended and
	// still count as sequential, for reordered or skipping reads (default 4 MiB).
	Slack int64
	// Overshoot is how far past the end of what an application read the
	// kernel's own readahead may go, in reads no different from the
	// application's: pread()s of 32, 66 and 150 MiB through a FUSE mount
	// were followed by reads of 8, 14 and 10 MiB more, one of 8 MiB by
	// none (default DefaultOvershoot, 16 MiB). See Bounder.
	Overshoot int64
	// Disabled turns readahead off: Stream only passes reads through.
	Disabled bool
}

// DefaultOvershoot is ReadaheadOptions.Overshoot's and
// FollowOptions.Overshoot's default.
const DefaultOvershoot = 16 << 20

func (o ReadaheadOptions) withDefaults() ReadaheadOptions {
	if o.Initial <= 0 {
		o.Initial = 16 << 20
	}
	if o.Max <= 0 {
		o.Max = 128 << 20
	}
	if o.Max < o.Initial {
		o.Max = o.Initial
	}
	if o.Slack <= 0 {
		o.Slack = 4 << 20
	}
	if o.Overshoot <= 0 {
		o.Overshoot = DefaultOvershoot
	}
	return o
}

// Bounder is a Watcher that knows where the reader may stop: the end of
// the tensor (or other unit a loader reads whole) a read ends in.
type Bounder interface {
	// Bound returns the first unit end at or after end, and false when
	// none is known there.
	Bound(end int64) (int64, bool)
}

// Ends are where a file's units (tensors) end, ascending, without
// repeats: what a Bounder answers from.
type Ends []int64

// NewEnds sorts ends and drops repeats, in place.
func NewEnds(ends []int64) Ends {
	slices.Sort(ends)
	return slices.Compact(ends)
}

// Bound returns the first end at or after end, and false past the last.
func (e Ends) Bound(end int64) (int64, bool) {
	i, _ := slices.BinarySearch(e, end)
	if i == len(e) {
		return 0, false
	}
	return e[i], true
}

// Stream is one reader of one object with its readahead state. It is safe
// for concurrent use: go-fuse serves a handle's reads in parallel.
type Stream struct {
	b        Blocks
	opts     ReadaheadOptions
	watchers []Watcher

	// first is set by the first read. That read (a loader's header) is
	// made before the prefetches it causes, so that its load goes alone
	// and not behind a window of the file's blocks. Later reads move the
	// window first, so that the blocks around them load in parallel.
	first atomic.Bool

	bounders []Bounder

	mu     sync.Mutex
	next   int64 // where the last read ended
	window int64 // current window; 0 = not sequential yet
	issued int64 // prefetch requested up to here
	// Until the reader has gone on past the end of the unit it started
	// in (see Bounder), the window stops Overshoot past that end: a
	// loader that reads one tensor and stops costs that tensor and what
	// the kernel's readahead reads after it, not a window past it. A read
	// beyond is a reader going on, which is streaming, and the window
	// runs free.
	bound    int64 // the end of the unit the sequential run started in; -1 not known
	start    int64 // where the sequential run started
	streamed bool
}

// NewStream wraps b with readahead; every read is also shown to the
// watchers (plan followers, profile recorders). Nil watchers are ignored.
func NewStream(b Blocks, opts ReadaheadOptions, watchers ...Watcher) *Stream {
	s := &Stream{b: b, opts: opts.withDefaults(), next: -1, bound: -1}
	for _, w := range watchers {
		if w != nil {
			s.watchers = append(s.watchers, w)
			if b, ok := w.(Bounder); ok {
				s.bounders = append(s.bounders, b)
			}
		}
	}
	return s
}

// ReadAt observes the read, extends the readahead and reads; see first.
func (s *Stream) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if s.first.CompareAndSwap(false, true) {
		n, err := s.b.ReadAt(ctx, p, off)
		s.watch(off, int64(len(p)))
		return n, err
	}
	s.watch(off, int64(len(p)))
	return s.b.ReadAt(ctx, p, off)
}

func (s *Stream) watch(off, n int64) {
	for _, w := range s.watchers {
		w.Observe(off, n)
	}
	if !s.opts.Disabled {
		s.observe(off, n)
	}
}

// ReadSlices is ReadAt in place.
func (s *Stream) ReadSlices(ctx context.Context, off int64, n int) ([][]byte, func(), error) {
	if s.first.CompareAndSwap(false, true) {
		slices, release, err := s.b.ReadSlices(ctx, off, n)
		s.watch(off, int64(n))
		return slices, release, err
	}
	s.watch(off, int64(n))
	return s.b.ReadSlices(ctx, off, n)
}

// Served tells the stream of a read answered without it, from bytes its
// owner already held (a header fetched at mount), so that readahead and
// the watchers see the read as if the stream had served it.
func (s *Stream) Served(off, n int64) {
	s.first.Store(true)
	s.watch(off, n)
}

// Release ends the stream. Prefetched blocks stay cached for other readers.
func (s *Stream) Release() {}

func (s *Stream) observe(off, n int64) {
	end := off + n
	s.mu.Lock()
	// A stream starts at 0 (loaders read the header first) or continues
	// near where the last read ended; anything else is a jump.
	sequential := (s.next < 0 && off == 0) ||
		(s.next >= 0 && off >= s.next-s.opts.Slack && off <= s.next+s.opts.Slack)
	switch {
	case !sequential:
		s.window, s.issued, s.next = 0, end, end
		// Reads of one unit come reordered (the kernel has several in
		// flight): within the unit and its overshoot, a jump starts no
		// new run.
		if s.bound < 0 || off < s.start || end > s.bound+s.overshootLocked() {
			s.bound, s.start = -1, off
		}
	case s.window == 0:
		s.window, s.next = s.opts.Initial, max(s.next, end)
	default:
		if end > s.next {
			s.window = min(s.window*2, s.opts.Max)
		}
		s.next = max(s.next, end)
	}
	if sequential && !s.streamed && s.bound >= 0 && end > s.bound+s.overshootLocked() {
		s.streamed = true
	}
	var from, length int64
	if s.window > 0 {
		from = max(s.issued, end)
		target := min(end+s.window, s.b.Size())
		if !s.streamed {
			target = s.boundLocked(end, target)
		}
		if target > from {
			length = target - from
			s.issued = target
		}
	}
	s.mu.Unlock()
	if length > 0 {
		s.b.Prefetch(from, length)
	}
}

// boundLocked stops target Overshoot past the end of the unit the
// sequential run started in: the kernel's readahead would have those
// bytes read anyway, and loaded ahead they do not stall a reader that
// goes on.
func (s *Stream) boundLocked(end, target int64) int64 {
	if s.bound < 0 {
		for _, b := range s.bounders {
			if at, ok := b.Bound(end); ok && (s.bound < 0 || at < s.bound) {
				s.bound = at
			}
		}
	}
	if s.bound < 0 {
		return target
	}
	return min(target, s.bound+s.overshootLocked())
}

// overshootLocked is how far past the unit the kernel's readahead may
// read: Overshoot, or half the sequential run to the unit's end when that
// is less, since the kernel reads less past a shorter read (none past an
// 8 MiB one, 8 MiB past 32), and a reader that goes on past a small first
// tensor should stream soon.
func (s *Stream) overshootLocked() int64 {
	return min(s.opts.Overshoot, (s.bound-s.start)/2)
}
