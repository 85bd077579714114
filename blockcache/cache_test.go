package blockcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memLoader serves objects from memory and records what it loaded.
type memLoader struct {
	data map[string][]byte // by name+version

	mu    sync.Mutex
	loads []int64 // offsets, in load order
	gate  chan struct{}
	fail  int // fail this many loads first
}

func (l *memLoader) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	if l.gate != nil {
		select {
		case <-l.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	l.mu.Lock()
	l.loads = append(l.loads, off)
	if l.fail > 0 {
		l.fail--
		l.mu.Unlock()
		return errors.New("injected failure")
	}
	l.mu.Unlock()
	copy(p, l.data[id.Name+id.Version][off:])
	return nil
}

func (l *memLoader) loadOrder() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.loads...)
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// waitFor polls a condition, bounded in time, yielding between polls.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func TestReadAtMatchesSource(t *testing.T) {
	data := randomBytes(1<<20+12345, 1)
	l := &memLoader{data: map[string][]byte{"fv1": data}}
	c := New(Options{BlockSize: 64 << 10, MemBytes: 4 << 20, Workers: 4}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v1", Size: int64(len(data))})
	r := rand.New(rand.NewPCG(2, 2))
	for range 2000 {
		off := r.Int64N(int64(len(data)) + 10)
		p := make([]byte, r.IntN(300<<10))
		n, err := obj.ReadAt(context.Background(), p, off)
		wantN := max(0, min(len(p), len(data)-int(off)))
		if n != wantN {
			t.Fatalf("ReadAt(%d, %d) = %d bytes, want %d", off, len(p), n, wantN)
		}
		if wantN < len(p) && !errors.Is(err, io.EOF) {
			t.Fatalf("ReadAt past end: err %v, want io.EOF", err)
		}
		if wantN == len(p) && err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", off, len(p), err)
		}
		if !bytes.Equal(p[:n], data[off:int(off)+n]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", off, len(p))
		}
	}
}

func TestMatchesServesNoReader(t *testing.T) {
	data := randomBytes(256<<10, 5)
	l := &memLoader{data: map[string][]byte{"fv": data}}
	c := New(Options{BlockSize: 64 << 10, MemBytes: 4 << 20, Workers: 4}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	same, err := obj.Matches(context.Background(), data[:200<<10], 0)
	if err != nil || !same {
		t.Fatalf("Matches of the object's own bytes: %v, %v", same, err)
	}
	changed := bytes.Clone(data[64<<10 : 192<<10])
	changed[100] ^= 1
	if same, err := obj.Matches(context.Background(), changed, 64<<10); err != nil || same {
		t.Fatalf("Matches of changed bytes: %v, %v", same, err)
	}
	if same, err := obj.Matches(context.Background(), data[200<<10:], 200<<10); err != nil || !same {
		t.Fatalf("Matches up to the end: %v, %v", same, err)
	}
	// Every block was loaded and read whole, yet none counts as served:
	// none is consumed (so none goes first to make room), and no read was
	// a hit or a miss.
	st := c.Stats()
	if st.Loads != 4 || st.Hits != 0 || st.Misses != 0 {
		t.Errorf("after Matches: %d loads, %d hits, %d misses; want 4, 0, 0", st.Loads, st.Hits, st.Misses)
	}
	c.mu.Lock()
	consumed := c.consumed.Len()
	c.mu.Unlock()
	if consumed != 0 {
		t.Errorf("%d blocks consumed by Matches, want none", consumed)
	}
	// A reader's read of the same blocks does consume them.
	if _, err := obj.ReadAt(context.Background(), make([]byte, len(data)), 0); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	consumed = c.consumed.Len()
	c.mu.Unlock()
	if consumed != 4 {
		t.Errorf("%d blocks consumed by a read of all of them, want 4", consumed)
	}
}

func TestConcurrentMissesMakeOneLoad(t *testing.T) {
	data := randomBytes(1<<20, 3)
	l := &memLoader{data: map[string][]byte{"fv": data}, gate: make(chan struct{})}
	c := New(Options{BlockSize: 1 << 20, MemBytes: 8 << 20, Workers: 4}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	const readers = 8
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096)
			off := int64(i * 100000)
			if _, err := obj.ReadAt(context.Background(), p, off); err != nil {
				errs <- err
			} else if !bytes.Equal(p, data[off:off+4096]) {
				errs <- errors.New("wrong bytes")
			}
		}()
	}
	waitFor(t, "all readers to miss", func() bool { return c.Stats().Misses == readers })
	close(l.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := len(l.loadOrder()); got != 1 {
		t.Fatalf("%d concurrent misses made %d loads, want 1", readers, got)
	}
}

func TestMemoryBudgetIsKept(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(40*bs, 4)
	l := &memLoader{data: map[string][]byte{"fv": data}}
	c := New(Options{BlockSize: bs, MemBytes: 4 * bs, Workers: 2}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	p := make([]byte, bs)
	for i := range 40 {
		if _, err := obj.ReadAt(context.Background(), p, int64(i*bs)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[i*bs:(i+1)*bs]) {
			t.Fatalf("block %d: wrong bytes", i)
		}
		if s := c.Stats(); s.MemBytes > s.MemCapacity {
			t.Fatalf("after block %d: %d bytes in use, budget %d", i, s.MemBytes, s.MemCapacity)
		}
	}
	if s := c.Stats(); s.Evictions < 36 {
		t.Fatalf("evictions = %d, want at least 36", s.Evictions)
	}
}

func TestPrefetchNeverEvictsUnreadPrefetches(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(8*bs, 5)
	l := &memLoader{data: map[string][]byte{"fv": data}}
	c := New(Options{BlockSize: bs, MemBytes: 4 * bs, Workers: 1}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	obj.Prefetch(0, int64(len(data)))
	waitFor(t, "prefetches to settle", func() bool {
		s := c.Stats()
		return s.Prefetches+s.PrefetchesDropped == 8
	})
	s := c.Stats()
	if s.Prefetches != 4 || s.PrefetchesDropped != 4 || s.Evictions != 0 {
		t.Fatalf("prefetch of 8 blocks into a 4-block cache: %d loaded, %d dropped, %d evicted; want 4, 4, 0",
			s.Prefetches, s.PrefetchesDropped, s.Evictions)
	}
	// The first four blocks were kept and are hits.
	p := make([]byte, 4*bs)
	if _, err := obj.ReadAt(context.Background(), p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, data[:4*bs]) {
		t.Fatal("wrong bytes from prefetched blocks")
	}
	if got := c.Stats().Hits; got != 4 {
		t.Fatalf("hits = %d, want 4", got)
	}
}

func TestDemandLoadsGoBeforePrefetches(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(16*bs, 6)
	l := &memLoader{data: map[string][]byte{"fv": data}, gate: make(chan struct{})}
	c := New(Options{BlockSize: bs, MemBytes: 32 * bs, Workers: 1}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	obj.Prefetch(0, 6*bs) // the worker takes block 0 and waits at the gate
	waitFor(t, "the worker to start block 0", func() bool { return c.Stats().Prefetches == 1 })
	done := make(chan error)
	go func() {
		p := make([]byte, 10)
		_, err := obj.ReadAt(context.Background(), p, 12*bs)
		done <- err
	}()
	waitFor(t, "the demand miss", func() bool { return c.Stats().Misses == 1 })
	close(l.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all loads", func() bool { return len(l.loadOrder()) == 7 })
	order := l.loadOrder()
	if order[0] != 0 || order[1] != 12*bs {
		t.Fatalf("load order %v: want block 0 (already started), then the demand block %d", order, 12*bs)
	}
}

func TestFailedLoadIsRetriedByNextRead(t *testing.T) {
	data := randomBytes(100000, 7)
	l := &memLoader{data: map[string][]byte{"fv": data}, fail: 1}
	c := New(Options{BlockSize: 64 << 10, MemBytes: 1 << 20, Workers: 2}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	p := make([]byte, 1000)
	if _, err := obj.ReadAt(context.Background(), p, 0); err == nil {
		t.Fatal("first read succeeded despite a failed load")
	}
	if _, err := obj.ReadAt(context.Background(), p, 0); err != nil {
		t.Fatalf("second read: %v", err)
	}
	if !bytes.Equal(p, data[:1000]) {
		t.Fatal("wrong bytes after retry")
	}
	if s := c.Stats(); s.LoadErrors != 1 || s.Loads != 2 {
		t.Fatalf("loads %d, errors %d; want 2, 1", s.Loads, s.LoadErrors)
	}
}

func TestVersionsNeverShareBlocks(t *testing.T) {
	v1, v2 := randomBytes(5000, 8), randomBytes(5000, 9)
	l := &memLoader{data: map[string][]byte{"fv1": v1, "fv2": v2}}
	c := New(Options{BlockSize: 64 << 10, MemBytes: 1 << 20}, l)
	defer c.Close()
	for _, tc := range []struct {
		version string
		want    []byte
	}{{"v1", v1}, {"v2", v2}, {"v1", v1}} {
		obj := c.Object(ObjectID{Name: "f", Version: tc.version, Size: 5000})
		// Half the block: one read whole would be consumed, and its
		// memory reused by the next load.
		p := make([]byte, 2500)
		if _, err := obj.ReadAt(context.Background(), p, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, tc.want[:len(p)]) {
			t.Fatalf("version %s served other bytes", tc.version)
		}
	}
	if got := len(l.loadOrder()); got != 2 {
		t.Fatalf("loads = %d, want one per version", got)
	}
}

func TestCloseFailsWaitingReads(t *testing.T) {
	l := &memLoader{data: map[string][]byte{"fv": make([]byte, 1<<20)}, gate: make(chan struct{})}
	c := New(Options{BlockSize: 64 << 10, MemBytes: 1 << 20, Workers: 1}, l)
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: 1 << 20})
	errs := make(chan error, 2)
	for _, off := range []int64{0, 200 << 10} {
		go func() {
			_, err := obj.ReadAt(context.Background(), make([]byte, 10), off)
			errs <- err
		}()
	}
	waitFor(t, "both misses", func() bool { return c.Stats().Misses == 2 })
	c.Close()
	for range 2 {
		if err := <-errs; err == nil {
			t.Fatal("read succeeded on a closed cache with a blocked loader")
		}
	}
}

func BenchmarkHit(b *testing.B) {
	const bs = 8 << 20
	data := randomBytes(bs, 10)
	l := &memLoader{data: map[string][]byte{"fv": data}}
	c := New(Options{BlockSize: bs, MemBytes: 64 << 20}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: bs})
	p := make([]byte, 1<<20)
	if _, err := obj.ReadAt(context.Background(), p, 0); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := obj.ReadAt(context.Background(), p, int64(i%8)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

func TestReadAfterCloseFails(t *testing.T) {
	l := &memLoader{data: map[string][]byte{"fv": make([]byte, 1<<20)}}
	c := New(Options{BlockSize: 64 << 10, MemBytes: 1 << 20}, l)
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: 1 << 20})
	if _, err := obj.ReadAt(context.Background(), make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := obj.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, errClosed) {
		t.Fatalf("read after Close: %v, want errClosed", err)
	}
}

func TestReadSlicesLendsBlocksInPlace(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(5*bs+100, 40)
	l := &memLoader{data: map[string][]byte{"fv": data}}
	c := New(Options{BlockSize: bs, MemBytes: 2 * bs, Workers: 2}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	off := int64(bs - 10)
	slices, release, err := obj.ReadSlices(context.Background(), off, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(slices) != 2 || !bytes.Equal(bytes.Join(slices, nil), data[off:off+20]) {
		t.Fatalf("got %d slices with other bytes, want 2 holding [%d, %d)", len(slices), off, off+20)
	}
	// The lent blocks fill the budget; reading elsewhere must not evict them.
	if _, err := obj.ReadAt(context.Background(), make([]byte, 10), 4*bs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(slices, nil), data[off:off+20]) {
		t.Fatal("lent bytes changed before release")
	}
	release()
	// At the end: what is there, and io.EOF.
	slices, release, err = obj.ReadSlices(context.Background(), int64(len(data))-50, 200)
	if !errors.Is(err, io.EOF) || len(bytes.Join(slices, nil)) != 50 {
		t.Fatalf("read at the end: %d bytes, %v; want 50 and io.EOF", len(bytes.Join(slices, nil)), err)
	}
	release()
}

func TestPinnedBlocksAreNeverEvicted(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(24*bs, 41)
	l := &memLoader{data: map[string][]byte{"fv": data}}
	c := New(Options{BlockSize: bs, MemBytes: 6 * bs, Workers: 2}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	if _, err := obj.Pin(0, 4*bs); err == nil {
		t.Fatal("a pin of more than half the budget succeeded")
	}
	unpin, err := obj.Pin(bs, 2*bs)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pinned loads", func() bool { return len(l.loadOrder()) == 2 })
	for i := 3; i < 24; i++ { // stream the rest through the small budget
		if _, err := obj.ReadAt(context.Background(), make([]byte, 10), int64(i*bs)); err != nil {
			t.Fatal(err)
		}
	}
	loads := len(l.loadOrder())
	p := make([]byte, 2*bs)
	if _, err := obj.ReadAt(context.Background(), p, bs); err != nil || !bytes.Equal(p, data[bs:3*bs]) {
		t.Fatalf("pinned read: %v (or wrong bytes)", err)
	}
	if got := len(l.loadOrder()); got != loads {
		t.Fatalf("pinned blocks were evicted and loaded again (%d loads, want %d)", got, loads)
	}
	unpin()
	unpin() // harmless twice
	for i := 3; i < 24; i++ {
		obj.ReadAt(context.Background(), make([]byte, 10), int64(i*bs))
	}
	obj.ReadAt(context.Background(), p, bs)
	if got := len(l.loadOrder()); got <= loads+21 {
		t.Fatalf("unpinned blocks were never evicted (%d loads)", got)
	}
}

// groupLoader serves zeros, except that every load of a stalled group
// blocks until the cache is closed, like a source that stopped answering.
type groupLoader struct {
	stalled []string // groups whose loads never finish

	mu       sync.Mutex
	inFlight map[string]int // loads of each group under way
}

func (l *groupLoader) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	l.mu.Lock()
	l.inFlight[id.Group]++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.inFlight[id.Group]--
		l.mu.Unlock()
	}()
	if slices.Contains(l.stalled, id.Group) {
		<-ctx.Done()
		return ctx.Err()
	}
	clear(p)
	return nil
}

func (l *groupLoader) loading(group string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight[group]
}

// readBlocks starts a demand read of each of blocks blocks of obj, one
// goroutine each, and returns the channel their errors arrive on.
func readBlocks(obj *Object, bs int64, blocks int) chan error {
	done := make(chan error, blocks)
	for i := range blocks {
		go func() {
			_, err := obj.ReadAt(context.Background(), make([]byte, 1), int64(i)*bs)
			done <- err
		}()
	}
	return done
}

// A group whose source stalls can never hold every worker: another
// group's demand read is served while the stall goes on.
func TestStalledGroupCannotStarveAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, workers = 4 << 10, 4
		l := &groupLoader{stalled: []string{"a"}, inFlight: map[string]int{}}
		c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: workers}, l)
		defer c.Close()
		a := c.Object(ObjectID{Name: "a/w", Version: "v", Size: 32 * bs, Group: "a"})
		b := c.Object(ObjectID{Name: "b/w", Version: "v", Size: 32 * bs, Group: "b"})
		// Group b was seen before: a mount knows its models from the start.
		if err := <-readBlocks(b, bs, 1); err != nil {
			t.Fatal(err)
		}
		stalledReads := readBlocks(a, bs, 2*workers)
		a.Prefetch(16*bs, 16*bs)
		synctest.Wait()
		if got := l.loading("a"); got != workers-1 {
			t.Errorf("the stalled group holds %d of %d workers, want %d", got, workers, workers-1)
		}
		done := readBlocks(b, bs, 3)
		synctest.Wait()
		for range 3 {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("read of the healthy group: %v", err)
				}
			default:
				t.Fatal("a read of the healthy group waits behind the stalled group")
			}
		}
		c.Close()
		for range 2 * workers {
			if err := <-stalledReads; err == nil {
				t.Error("a read of the stalled group succeeded")
			}
		}
	})
}

// However many groups stall, a group with nothing under way still gets a
// worker: two of three models stalled leave the third its reads.
func TestStalledGroupsCannotStarveAThird(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, workers = 4 << 10, 8
		l := &groupLoader{stalled: []string{"a", "b"}, inFlight: map[string]int{}}
		c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: workers, Groups: []string{"a", "b", "c"}}, l)
		defer c.Close()
		var objs []*Object
		for _, g := range []string{"c", "a", "b"} {
			objs = append(objs, c.Object(ObjectID{Name: g + "/w", Version: "v", Size: 32 * bs, Group: g}))
		}
		stalledA := readBlocks(objs[1], bs, 2*workers)
		synctest.Wait()
		stalledB := readBlocks(objs[2], bs, 2*workers)
		synctest.Wait()
		if a, b := l.loading("a"), l.loading("b"); a != workers-2 || b != 1 {
			t.Errorf("stalled groups hold %d and %d of %d workers, want one left free for the idle group", a, b, workers)
		}
		done := readBlocks(objs[0], bs, 3)
		synctest.Wait()
		for range 3 {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("read of the healthy group: %v", err)
				}
			default:
				t.Fatal("a read of the healthy group waits behind the stalled groups")
			}
		}
		c.Close()
		for range 2 * workers {
			<-stalledA
			<-stalledB
		}
	})
}

// With a single group, every worker may load for it: a mount of one
// model keeps its full concurrency.
func TestSingleGroupUsesEveryWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, workers = 4 << 10, 4
		l := &groupLoader{stalled: []string{""}, inFlight: map[string]int{}}
		c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: workers}, l)
		a := c.Object(ObjectID{Name: "w", Version: "v", Size: 32 * bs})
		reads := readBlocks(a, bs, 2*workers)
		synctest.Wait()
		if got := l.loading(""); got != workers {
			t.Errorf("%d loads under way, want all %d workers busy", got, workers)
		}
		c.Close()
		for range 2 * workers {
			<-reads
		}
	})
}

// gateLoader holds each load until the test releases its block, and
// records the order loads started in.
type gateLoader struct {
	mu      sync.Mutex
	gates   map[string]chan struct{}
	started []string
}

func (l *gateLoader) gate(name string, off int64) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := fmt.Sprintf("%s@%d", name, off)
	if l.gates[k] == nil {
		l.gates[k] = make(chan struct{})
	}
	return l.gates[k]
}

func (l *gateLoader) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	g := l.gate(id.Name, off)
	l.mu.Lock()
	l.started = append(l.started, fmt.Sprintf("%s@%d", id.Name, off))
	l.mu.Unlock()
	select {
	case <-g:
	case <-ctx.Done():
		return ctx.Err()
	}
	clear(p)
	return nil
}

func (l *gateLoader) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started[len(l.started)-1]
}

// A worker that comes free serves the waiting group with the fewest
// loads under way, even if another group's demand waited longer.
func TestFreeWorkerServesGroupWithFewestLoads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs = 4 << 10
		l := &gateLoader{gates: map[string]chan struct{}{}}
		c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 6}, l)
		defer c.Close()
		a := c.Object(ObjectID{Name: "a", Version: "v", Size: 32 * bs, Group: "a"})
		b := c.Object(ObjectID{Name: "b", Version: "v", Size: 32 * bs, Group: "b"})
		// Three loads of each group hold the six workers.
		readBlocks(a, bs, 3)
		readBlocks(b, bs, 3)
		synctest.Wait()
		// a's next block waits longer than b's.
		go a.ReadAt(context.Background(), make([]byte, 1), 3*bs)
		synctest.Wait()
		go b.ReadAt(context.Background(), make([]byte, 1), 3*bs)
		synctest.Wait()
		close(l.gate("b", 0)) // b is down to two loads, a still has three
		synctest.Wait()
		if got := l.last(); got != fmt.Sprintf("b@%d", 3*bs) {
			t.Errorf("the free worker started %s, want b's block 3: b has the fewest loads under way", got)
		}
	})
}

// A block a reader was served once is not prefetched again after RAM
// drops it: the reader's page cache holds it. Without a disk tier the
// source would send it twice; with one, it would come back from disk into
// a buffer nobody reads (an mmap loader in header order consumes blocks
// before a layer-order plan reaches them). A demand read still loads it.
func TestPrefetchSkipsBlocksAlreadyDelivered(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(map[bool]string{false: "ram", true: "disk"}[disk], func(t *testing.T) {
			const bs = 64 << 10
			data := randomBytes(8*bs, 7)
			l := &memLoader{data: map[string][]byte{"fv": data}}
			opts := Options{BlockSize: bs, MemBytes: 2 * bs, Workers: 1}
			if disk {
				opts.Disk = &DiskOptions{Dir: t.TempDir(), MaxBytes: 1 << 20}
			}
			c := New(opts, l)
			defer c.Close()
			obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
			p := make([]byte, bs)
			for i := range int64(8) { // a first pass; RAM keeps the last two blocks
				if _, err := obj.ReadAt(context.Background(), p, i*bs); err != nil {
					t.Fatal(err)
				}
			}
			if disk {
				waitFor(t, "every block written back", func() bool { return c.Stats().DiskWrites == 8 })
			}
			before := c.Stats()
			obj.Prefetch(0, int64(len(data)))
			// A queued block is pending at once, before a worker takes it.
			pending := c.ObjectStats([]ObjectID{obj.id})[0].Pending
			for i := range int64(8) {
				if pending.Has(i) {
					t.Fatalf("prefetch queued block %d, which the reader was served", i)
				}
			}
			if _, err := obj.ReadAt(context.Background(), p, 0); err != nil || !bytes.Equal(p, data[:bs]) {
				t.Fatalf("reading an evicted block again: %v", err)
			}
			got := c.Stats()
			if disk && (got.DiskHits != before.DiskHits+1 || got.Loads != before.Loads) {
				t.Fatalf("demand read of an evicted block: %d disk hits, %d source loads; want 1 and 0", got.DiskHits-before.DiskHits, got.Loads-before.Loads)
			}
			if !disk && got.Loads != before.Loads+1 {
				t.Fatalf("%d loads for the demand read of an evicted block, want 1", got.Loads-before.Loads)
			}
		})
	}
}

// Prefetches leave a quarter of the workers free, so a demand miss starts
// its load while every prefetch is stalled.
func TestDemandFindsAWorkerWhilePrefetchesStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, workers = 4 << 10, 4
		l := &gateLoader{gates: map[string]chan struct{}{}}
		c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: workers}, l)
		obj := c.Object(ObjectID{Name: "m", Version: "v", Size: 32 * bs})
		obj.Prefetch(0, 16*bs)
		synctest.Wait()
		if got := c.Stats().Prefetches; got != workers-workers/4 {
			t.Fatalf("%d prefetch loads under way, want %d", got, workers-workers/4)
		}
		done := make(chan error)
		go func() {
			_, err := obj.ReadAt(context.Background(), make([]byte, 10), 20*bs)
			done <- err
		}()
		synctest.Wait()
		if got := l.last(); got != fmt.Sprintf("m@%d", 20*bs) {
			t.Fatalf("last load started: %s, want the demand block at %d", got, 20*bs)
		}
		close(l.gate("m", 20*bs))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
}

// A stream through the cache works in the memory of the blocks it has
// consumed rather than growing to the budget: fresh pages cost far more
// than the bytes' copy. A block read only in part is kept.
func TestConsumedBlocksAreReusedFirst(t *testing.T) {
	const bs = 64 << 10
	id := ObjectID{Name: "w", Version: "v", Size: 16*bs + 100}
	other := ObjectID{Name: "p", Version: "v", Size: bs}
	data := randomBytes(int(id.Size), 7)
	l := &memLoader{data: map[string][]byte{"wv": data, "pv": randomBytes(bs, 8)}}
	c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 2}, l)
	defer c.Close()
	ctx := context.Background()
	// Half of one block only: not consumed, so it stays.
	if _, err := c.Object(other).ReadAt(ctx, make([]byte, bs/2), 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, id.Size)
	obj := c.Object(id)
	for off := int64(0); off < id.Size; off += bs / 4 {
		slices, release, err := obj.ReadSlices(ctx, off, bs/4)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		for _, s := range slices {
			got = append(got, s...)
		}
		release()
		if s := c.Stats(); s.MemBytes > 3*bs {
			t.Fatalf("at %d the cache holds %d bytes; a stream should reuse its consumed blocks", off, s.MemBytes)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	if st := c.ObjectStats([]ObjectID{other})[0]; st.CachedBytes != bs {
		t.Fatalf("the block read in part was dropped: %+v", st)
	}
	// A consumed block is read again from the source: the reader's page
	// cache was expected to have it.
	if _, err := obj.ReadAt(ctx, make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Loads != 17+1+1 {
		t.Fatalf("%d loads, want 19", s.Loads)
	}
}

// gatedPattern fills blocks with patternByte once gate is closed.
type gatedPattern struct{ gate chan struct{} }

func (l gatedPattern) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	select {
	case <-l.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return patternLoader{}.LoadBlock(ctx, id, off, p)
}

// A prefetch asked far ahead (a plan's window, readahead) runs only
// minAhead ahead of the reader while the source keeps up, so a steady
// sequential read cycles through the buffers it consumed instead of
// touching fresh memory for every block of the window.
func TestSteadyReadReusesAFewBuffers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, blocks = 1 << 20, 128
		gate := make(chan struct{})
		close(gate)
		c := New(Options{BlockSize: bs, MemBytes: 1 << 30, Workers: 8}, gatedPattern{gate})
		defer c.Close()
		id := ObjectID{Name: "w", Version: "v", Size: blocks * bs}
		obj := c.Object(id)
		obj.Prefetch(0, id.Size)
		synctest.Wait()
		if s := c.Stats(); s.Prefetches != minAhead/bs || s.PrefetchAhead != minAhead {
			t.Fatalf("%d prefetches started within a bound of %d bytes; want %d within %d", s.Prefetches, s.PrefetchAhead, minAhead/bs, minAhead)
		}
		for off := int64(0); off < id.Size; off += bs {
			slices, release, err := obj.ReadSlices(context.Background(), off, bs)
			if err != nil || len(slices) != 1 || slices[0][bs/2] != patternByte(off+bs/2) {
				t.Fatalf("read at %d: %v", off, err)
			}
			release()
			synctest.Wait() // the source keeps up
		}
		s := c.Stats()
		if s.FreshBuffers > minAhead/bs+2 || s.FreshBuffers+s.ReusedBuffers != blocks {
			t.Fatalf("%d fresh and %d reused buffers for %d blocks; want at most %d fresh", s.FreshBuffers, s.ReusedBuffers, blocks, minAhead/bs+2)
		}
		if s.PrefetchAhead != minAhead || s.DemandLoads != 0 {
			t.Fatalf("bound %d, %d demand loads: the reader never caught up, want %d and 0", s.PrefetchAhead, s.DemandLoads, minAhead)
		}
	})
}

// A reader that reaches a prefetch the bound held back shows the link
// needs more in flight: the bound doubles and more loads start at once.
func TestAheadBoundGrowsWhenReaderCatchesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, blocks = 1 << 20, 128
		gate := make(chan struct{})
		c := New(Options{BlockSize: bs, MemBytes: 1 << 30, Workers: 128}, gatedPattern{gate})
		defer c.Close()
		id := ObjectID{Name: "w", Version: "v", Size: blocks * bs}
		obj := c.Object(id)
		obj.Prefetch(0, id.Size)
		synctest.Wait()
		if s := c.Stats(); s.Prefetches != minAhead/bs {
			t.Fatalf("%d prefetches started, want %d", s.Prefetches, minAhead/bs)
		}
		done := make(chan error)
		go func() {
			_, err := obj.ReadAt(context.Background(), make([]byte, 10), 40*bs)
			done <- err
		}()
		synctest.Wait()
		if s := c.Stats(); s.PrefetchAhead != 2*minAhead || s.Prefetches != 2*minAhead/bs || s.DemandLoads != 1 {
			t.Fatalf("after the reader reached a held block: bound %d, %d prefetches, %d demand loads; want %d, %d, 1",
				s.PrefetchAhead, s.Prefetches, s.DemandLoads, 2*minAhead, 2*minAhead/bs)
		}
		close(gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// A reader that waits on a prefetch still loading does not grow the
// bound by itself: on a starved CPU loads are slow next to the reader
// too, and more in flight would only cost memory. The link's measured
// need decides instead (TestAheadBoundSettlesAtTheLinksNeed).
func TestAheadBoundHoldsWhileReaderWaitsOnALoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, blocks = 1 << 20, 128
		gate := make(chan struct{})
		c := New(Options{BlockSize: bs, MemBytes: 1 << 30, Workers: 128}, gatedPattern{gate})
		defer c.Close()
		id := ObjectID{Name: "w", Version: "v", Size: blocks * bs}
		obj := c.Object(id)
		obj.Prefetch(0, id.Size)
		synctest.Wait()
		done := make(chan error)
		go func() {
			_, err := obj.ReadAt(context.Background(), make([]byte, 10), 0)
			done <- err
		}()
		synctest.Wait()
		// The block read no longer counts as ahead: one more starts.
		if s := c.Stats(); s.PrefetchAhead != minAhead || s.Prefetches != minAhead/bs+1 {
			t.Fatalf("after the reader waited on a loading prefetch: bound %d, %d prefetches; want %d, %d",
				s.PrefetchAhead, s.Prefetches, minAhead, minAhead/bs+1)
		}
		close(gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// linkLoader emulates a link: each load waits latency, then its bytes
// pass at rate bytes/s shared by all loads, in the order they arrive.
// It writes one byte per block, so the test touches little memory.
type linkLoader struct {
	latency time.Duration
	rate    float64
	mu      sync.Mutex
	free    time.Time // when the link has sent what it was asked
}

func (l *linkLoader) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	time.Sleep(l.latency) // the emulated round trip
	l.mu.Lock()
	start := time.Now()
	if l.free.After(start) {
		start = l.free
	}
	l.free = start.Add(time.Duration(float64(len(p)) / l.rate * float64(time.Second)))
	until := l.free
	l.mu.Unlock()
	time.Sleep(time.Until(until)) // the emulated transfer
	p[0] = patternByte(off)
	return nil
}

// Behind a link with a round trip, a reader faster than the link gets
// about the link's rate, and the bound settles near the link's
// bandwidth-delay product (rate × latency, with headroom), far from the
// RAM budget that growing on every wait reached.
func TestAheadBoundSettlesAtTheLinksNeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			bs      = 1 << 20
			blocks  = 2048
			rate    = 1 << 30 // bytes/s
			latency = 100 * time.Millisecond
			budget  = 4 << 30
		)
		bdp := int64(rate * latency.Seconds())
		c := New(Options{BlockSize: bs, MemBytes: budget, Workers: 512}, &linkLoader{latency: latency, rate: rate})
		defer c.Close()
		id := ObjectID{Name: "w", Version: "v", Size: blocks * bs}
		obj := c.Object(id)
		start := time.Now()
		obj.Prefetch(0, id.Size)
		for off := int64(0); off < id.Size; off += bs {
			slices, release, err := obj.ReadSlices(context.Background(), off, bs)
			if err != nil || len(slices) != 1 || slices[0][0] != patternByte(off) {
				t.Fatalf("read at %d: %v", off, err)
			}
			release()
		}
		took := time.Since(start)
		s := c.Stats()
		if s.PrefetchAhead < bdp || s.PrefetchAhead > 3*bdp {
			t.Errorf("bound %d MiB, want between rate × latency (%d MiB) and three times that", s.PrefetchAhead>>20, bdp>>20)
		}
		// The link's own time for the bytes, plus a round trip and a
		// quarter for the start while the estimate grows.
		if want := time.Duration(float64(id.Size)/rate*float64(time.Second)*5/4) + latency; took > want {
			t.Errorf("reading %d MiB took %v behind a %v link of %d MiB/s, want at most %v", id.Size>>20, took, latency, rate>>20, want)
		}
		t.Logf("bound %d MiB, %v, %d fresh buffers, %d demand loads", s.PrefetchAhead>>20, took, s.FreshBuffers, s.DemandLoads)
	})
}

// partLoader is a memLoader that can split a load, and records how many
// parts each load was asked in (1: LoadBlock).
type partLoader struct {
	memLoader
	partsMu sync.Mutex
	parts   []int
}

func (l *partLoader) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	return l.LoadBlockParts(ctx, id, off, p, 1)
}

func (l *partLoader) LoadBlockParts(ctx context.Context, id ObjectID, off int64, p []byte, parts int) error {
	l.partsMu.Lock()
	l.parts = append(l.parts, parts)
	l.partsMu.Unlock()
	return l.memLoader.LoadBlock(ctx, id, off, p)
}

func (l *partLoader) asked() []int {
	l.partsMu.Lock()
	defer l.partsMu.Unlock()
	return slices.Clone(l.parts)
}

// A load with few others under way is split while the source has not
// shown itself near; one block loaded fast, split or not, ends that; a
// split load is no sample of how long a block takes in one request.
func TestLoadsSplitOnlyWhileFewAndTheSourceSlow(t *testing.T) {
	const bs = 4 << 20
	data := randomBytes(3*bs, 9)
	l := &partLoader{memLoader: memLoader{data: map[string][]byte{"fv": data}}}
	c := New(Options{BlockSize: bs, MemBytes: 8 * bs, Workers: 4}, l)
	defer c.Close()
	obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
	p := make([]byte, bs)
	if _, err := obj.ReadAt(context.Background(), p, 0); err != nil || !bytes.Equal(p, data[:bs]) {
		t.Fatalf("first block: %v", err)
	}
	if got := l.asked(); !slices.Equal(got, []int{splitParts}) {
		t.Fatalf("a lone first load was asked in %v parts, want [%d]", got, splitParts)
	}
	c.mu.Lock()
	seen := c.link.seen
	c.mu.Unlock()
	if seen {
		t.Fatal("a split load was taken for the time a block takes in one request")
	}
	// That load took well under splitSlowLoad: the source is near.
	if _, err := obj.ReadAt(context.Background(), p, bs); err != nil || !bytes.Equal(p, data[bs:2*bs]) {
		t.Fatalf("second block: %v", err)
	}
	if got := l.asked(); !slices.Equal(got, []int{splitParts, 1}) {
		t.Fatalf("loads after a fast one were asked in %v parts, want [%d 1]", got, splitParts)
	}
}

// With splitParts loads under way, a further prefetch is one request; a
// demand load, which a reader waits on, is split beside them, while fewer
// than splitParts demand loads are under way.
func TestLoadsAreWholeWithThePipelineFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs = 4 << 20
		data := randomBytes(12*bs, 10)
		gate := make(chan struct{})
		l := &partLoader{memLoader: memLoader{data: map[string][]byte{"fv": data}, gate: gate}}
		c := New(Options{BlockSize: bs, MemBytes: 32 * bs, Workers: 16}, l)
		obj := c.Object(ObjectID{Name: "f", Version: "v", Size: int64(len(data))})
		obj.Prefetch(0, 8*bs)
		synctest.Wait() // every worker that took a load is held at the gate
		got := l.asked()
		slices.Sort(got)
		// Eight prefetch loads (minAhead); the first three were split.
		want := []int{1, 1, 1, 1, 1, splitParts, splitParts, splitParts}
		if !slices.Equal(got, want) {
			t.Errorf("loads started together were asked in %v parts, want %v (split while fewer than %d were under way)", got, want, splitParts)
		}
		read := make(chan error, 4)
		for i := int64(8); i < 12; i++ {
			go func() {
				p := make([]byte, bs)
				_, err := obj.ReadAt(context.Background(), p, i*bs)
				if err == nil && !bytes.Equal(p, data[i*bs:(i+1)*bs]) {
					err = fmt.Errorf("block %d: wrong bytes", i)
				}
				read <- err
			}()
		}
		synctest.Wait() // the demand loads are held at the gate too
		got = l.asked()
		var demand []int
		if len(got) > 8 {
			demand = slices.Sorted(slices.Values(got[8:]))
		}
		if want := []int{1, splitParts, splitParts, splitParts}; !slices.Equal(demand, want) {
			t.Errorf("four demand loads beside eight prefetches were asked in %v parts, want %v", demand, want)
		}
		close(gate)
		for range 4 {
			if err := <-read; err != nil {
				t.Errorf("demand read: %v", err)
			}
		}
		c.Close()
	})
}

// connLinkLoader emulates a link like the S3-like one of
// docs/benchmarks.md: each request waits latency, then its bytes pass at
// perConn bytes/s (the connection's window is its limit, not the link's
// rate). It splits loads into requests that run at once, and writes one
// byte per block.
type connLinkLoader struct {
	latency time.Duration
	perConn float64
}

func (l connLinkLoader) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	return l.LoadBlockParts(ctx, id, off, p, 1)
}

func (l connLinkLoader) LoadBlockParts(ctx context.Context, id ObjectID, off int64, p []byte, parts int) error {
	part := (len(p) + parts - 1) / parts
	time.Sleep(l.latency + time.Duration(float64(part)/l.perConn*float64(time.Second)))
	p[0] = patternByte(off)
	return nil
}

// A file's first loads are split (few run, the source is slow), and until
// a block loads in one request the bound has no latency to go by. A split
// load gives one (at most its time times its parts): the bound grows
// from the first split load rather than holding the reader's stream to
// minAhead until an unsplit load ends (behind the S3-like link, a round
// trip and more with four loads in flight where the link needs twelve).
func TestAheadBoundGrowsFromASplitLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bs, blocks = 8 << 20, 64
		c := New(Options{BlockSize: bs, MemBytes: 1 << 30, Workers: 16}, connLinkLoader{latency: 20 * time.Millisecond, perConn: 100e6})
		defer c.Close()
		id := ObjectID{Name: "w", Version: "v", Size: blocks * bs}
		obj := c.Object(id)
		// The reader's first read loads alone, then its stream asks far
		// ahead.
		if _, err := obj.ReadAt(context.Background(), make([]byte, 10), 0); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		seen := c.link.seen
		c.mu.Unlock()
		if seen {
			t.Fatal("the first load was not split: nothing to test")
		}
		obj.Prefetch(bs, id.Size-bs)
		synctest.Wait()
		s := c.Stats()
		if s.PrefetchAhead <= minAhead || s.Prefetches <= minAhead/bs {
			t.Fatalf("after a split load: bound %d MiB, %d prefetches started; want more than minAhead (%d MiB, %d blocks)",
				s.PrefetchAhead>>20, s.Prefetches, minAhead>>20, minAhead/bs)
		}
	})
}
