package prefetch

import (
	"context"
	"sync"
	"testing"
)

// recorder is a Blocks that records prefetch requests.
type recorder struct {
	size   int64
	mu     sync.Mutex
	ranges [][2]int64
}

func (r *recorder) ReadAt(ctx context.Context, p []byte, off int64) (int, error) { return len(p), nil }
func (r *recorder) Size() int64                                                  { return r.size }
func (r *recorder) ReadSlices(ctx context.Context, off int64, n int) ([][]byte, func(), error) {
	return [][]byte{make([]byte, n)}, func() {}, nil
}
func (r *recorder) Prefetch(off, length int64) {
	r.mu.Lock()
	r.ranges = append(r.ranges, [2]int64{off, off + length})
	r.mu.Unlock()
}

// covered returns the end of the contiguous prefetched range from start,
// failing if any requests overlap (each byte is asked for once).
func (r *recorder) covered(t *testing.T, start int64) int64 {
	t.Helper()
	end := start
	for _, rg := range r.ranges {
		if rg[0] != end {
			t.Fatalf("prefetch ranges not contiguous: %v", r.ranges)
		}
		end = rg[1]
	}
	return end
}

const mib int64 = 1 << 20

func read(s *Stream, off, n int64) { s.ReadAt(context.Background(), make([]byte, n), off) }

func TestSequentialReadsGrowTheWindow(t *testing.T) {
	r := &recorder{size: 1 << 40}
	s := NewStream(r, ReadaheadOptions{Initial: 2 * mib, Max: 32 * mib})
	read(s, 0, mib)
	if got := r.covered(t, mib); got != 3*mib {
		t.Fatalf("after the first read, prefetched to %d, want %d", got, 3*mib)
	}
	for i := int64(1); i < 10; i++ {
		read(s, i*mib, mib)
	}
	// Window doubles per read to 32 MiB: 2,4,8,16,32,32...
	if got, want := r.covered(t, mib), 10*mib+32*mib; got != want {
		t.Fatalf("after 10 sequential reads, prefetched to %d MiB, want %d MiB", got/mib, want/mib)
	}
}

func TestReorderedReadsStaySequential(t *testing.T) {
	r := &recorder{size: 1 << 40}
	s := NewStream(r, ReadaheadOptions{Initial: 2 * mib, Max: 64 * mib, Slack: 4 * mib})
	for _, i := range []int64{0, 2, 1, 3, 5, 4, 6, 7} {
		read(s, i*mib, mib)
	}
	if got := r.covered(t, mib); got < 8*mib+32*mib {
		t.Fatalf("reordered stream prefetched only to %d MiB", got/mib)
	}
}

func TestRandomReadsDoNotPrefetch(t *testing.T) {
	r := &recorder{size: 1 << 40}
	s := NewStream(r, ReadaheadOptions{Initial: 2 * mib, Slack: mib})
	for _, off := range []int64{500, 900, 100, 300, 700} {
		read(s, off*mib, 4096)
	}
	if len(r.ranges) != 0 {
		t.Fatalf("random reads prefetched %v", r.ranges)
	}
	// A jump followed by a sequential read starts a new stream there.
	read(s, 200*mib, 4096)
	read(s, 200*mib+4096, mib)
	if len(r.ranges) == 0 || r.ranges[0][0] != 201*mib+4096 {
		t.Fatalf("sequential read after a jump: prefetch %v, want one starting at %d", r.ranges, 201*mib+4096)
	}
}

func TestPrefetchStopsAtEndOfObject(t *testing.T) {
	r := &recorder{size: 5 * mib}
	s := NewStream(r, ReadaheadOptions{Initial: 4 * mib, Max: 64 * mib})
	for i := int64(0); i < 5; i++ {
		read(s, i*mib, mib)
	}
	if got := r.covered(t, mib); got != 5*mib {
		t.Fatalf("prefetched to %d, want the object's end %d", got, 5*mib)
	}
}

func TestDisabledPassesThrough(t *testing.T) {
	r := &recorder{size: 1 << 30}
	s := NewStream(r, ReadaheadOptions{Disabled: true})
	for i := int64(0); i < 8; i++ {
		read(s, i*mib, mib)
	}
	if len(r.ranges) != 0 {
		t.Fatalf("disabled readahead prefetched %v", r.ranges)
	}
}

// eventLog is a Blocks that logs reads and prefetches in the order they
// reach it.
type eventLog struct {
	recorder
	events []string
}

func (e *eventLog) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	e.events = append(e.events, "read")
	return len(p), nil
}

func (e *eventLog) ReadSlices(ctx context.Context, off int64, n int) ([][]byte, func(), error) {
	e.events = append(e.events, "read")
	return [][]byte{make([]byte, n)}, func() {}, nil
}

func (e *eventLog) Prefetch(off, length int64) { e.events = append(e.events, "prefetch") }

// A stream's first read (a loader's header) reaches the cache before the
// prefetches it causes, from the readahead and from the watchers (a plan
// follower), so its load is queued first; later reads move the window
// first.
func TestFirstReadGoesBeforeItsPrefetches(t *testing.T) {
	e := &eventLog{recorder: recorder{size: 1 << 30}}
	w := watcherFunc(func(off, n int64) { e.Prefetch(off+n, mib) })
	s := NewStream(e, ReadaheadOptions{Initial: 2 * mib}, w)
	read(s, 0, mib)
	if _, release, _ := s.ReadSlices(context.Background(), mib, int(mib)); release != nil {
		release()
	}
	want := []string{"read", "prefetch", "prefetch", "prefetch", "prefetch", "read"}
	if len(e.events) != len(want) {
		t.Fatalf("events %v, want %v", e.events, want)
	}
	for i := range want {
		if e.events[i] != want[i] {
			t.Fatalf("events %v, want %v", e.events, want)
		}
	}
}

type watcherFunc func(off, n int64)

func (f watcherFunc) Observe(off, n int64) { f(off, n) }

// units is a Bounder over units (tensors) ending at the given offsets.
type units struct{ Ends }

func (units) Observe(off, n int64) {}

// A reader of one unit (a tensor) gets readahead to the unit's end and
// the overshoot the kernel's readahead reads anyway, and no further; a
// reader that goes on past those streams with the window.
func TestReadaheadStopsAtTheUnitEnd(t *testing.T) {
	r := &recorder{size: 1 << 40}
	s := NewStream(r, ReadaheadOptions{Initial: 2 * mib, Max: 32 * mib, Overshoot: 4 * mib}, units{Ends{20 * mib, 22 * mib, 24 * mib, 26 * mib}})
	for off := int64(0); off < 20*mib; off += mib {
		read(s, off, mib)
	}
	if got := r.covered(t, mib); got != 24*mib {
		t.Fatalf("reading the first unit prefetched to %d MiB, want its end and the overshoot, 24 MiB", got/mib)
	}
	for off := int64(20 * mib); off < 24*mib; off += mib {
		read(s, off, mib)
	}
	if got := r.covered(t, mib); got != 24*mib {
		t.Fatalf("reads within the overshoot prefetched to %d MiB, want nothing past 24 MiB", got/mib)
	}
	read(s, 24*mib, mib)
	if last := r.ranges[len(r.ranges)-1]; last != [2]int64{25 * mib, 25*mib + 32*mib} {
		t.Fatalf("a read past the overshoot prefetched %v, want the window from 25 MiB", r.ranges)
	}
}

// Past a small first unit the kernel reads little: a reader that goes on
// past half its length again streams.
func TestReadaheadStreamsSoonAfterASmallFirstUnit(t *testing.T) {
	r := &recorder{size: 1 << 40}
	s := NewStream(r, ReadaheadOptions{Initial: 2 * mib, Max: 32 * mib, Overshoot: 16 * mib}, units{Ends{2 * mib, 64 * mib}})
	read(s, 0, mib)
	read(s, mib, mib)
	if got := r.covered(t, mib); got != 3*mib {
		t.Fatalf("reading a 2 MiB first unit prefetched to %d MiB, want 3 MiB (half the run past its end)", got/mib)
	}
	read(s, 2*mib, mib)
	read(s, 3*mib, mib)
	// The window doubled with each read: 16 MiB by the fourth.
	if last := r.ranges[len(r.ranges)-1]; last != [2]int64{4 * mib, 20 * mib} {
		t.Fatalf("a reader 2 MiB past a 2 MiB first unit prefetched %v, want the window from 4 MiB", r.ranges)
	}
}

// Reads of one unit that come out of order, as the kernel's parallel
// reads do, neither end the unit's bound nor make the stream streaming.
func TestReorderedReadsKeepTheUnitBound(t *testing.T) {
	r := &recorder{size: 1 << 40}
	s := NewStream(r, ReadaheadOptions{Initial: 2 * mib, Max: 32 * mib, Slack: mib, Overshoot: 4 * mib}, units{Ends{20 * mib, 40 * mib}})
	for _, off := range []int64{0, 1, 2, 10, 3, 11, 19, 12, 21, 22, 23} {
		read(s, off*mib, mib)
	}
	for _, rg := range r.ranges {
		if rg[1] > 24*mib {
			t.Fatalf("reordered reads of the first unit prefetched %v, want nothing past 24 MiB", r.ranges)
		}
	}
}
