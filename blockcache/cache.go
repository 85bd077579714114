package blockcache

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ObjectID is the immutable identity of a remote object's content.
type ObjectID struct {
	// Source identifies where the object comes from (scheme, endpoint or
	// host, bucket, full key), so that no two sources ever share blocks,
	// whatever their names and versions.
	Source  string
	Name    string
	Version string
	Size    int64
	// Group names the fairness group the object's loads are scheduled in
	// (a mount sets it to the model's name): one group whose source stalls
	// cannot take every worker from the others. It is not part of the
	// identity; blocks are shared whatever the group.
	Group string
}

// Loader fills a block from the remote object. p is exactly the block's
// length (shorter for the last block); the loader must fill all of it.
type Loader interface {
	LoadBlock(ctx context.Context, obj ObjectID, off int64, p []byte) error
}

// PartLoader is a Loader that can load a block as several requests run at
// once. The cache asks for parts only where a reader is likely waiting on
// a slow source: no block large enough to split seen to load, split or
// not, in less than splitSlowLoad, and either a demand load (a reader
// waits on it) with fewer than splitParts demand loads under way, or
// fewer than splitParts loads of any kind under way. Behind a
// link where one connection gets ~100 MB/s and a round trip takes 20 ms,
// an 8 MiB block takes ~105 ms in one GET and ~45 ms in four; loads run
// few at a time at a file's first read and where prefetch waits for the
// reader to go on (past a tensor, a shard, a checkpoint), which is where
// readers stall (docs/benchmarks.md). A demand load beside a full
// pipeline of prefetches shares the link with them: in four requests it
// takes four shares of it, not one. With the pipeline full, a prefetch
// is one request, so a whole-model load does not pay for more of them;
// on a local or loopback store a block loads in milliseconds, and more
// requests would only cost CPU.
type PartLoader interface {
	Loader
	// LoadBlockParts is LoadBlock in parts requests at once.
	LoadBlockParts(ctx context.Context, obj ObjectID, off int64, p []byte, parts int) error
}

const (
	splitParts    = 4
	splitMinPart  = 1 << 20 // the smallest part worth a request of its own
	splitSlowLoad = 30 * time.Millisecond
)

// Options sizes the cache.
type Options struct {
	// BlockSize is the unit of fetching and caching (default 8 MiB).
	BlockSize int64
	// MemBytes is the RAM budget (default 1 GiB).
	MemBytes int64
	// Workers is the number of concurrent block loads (default 16).
	Workers int
	// Groups are the fairness groups known from the start (a mount's
	// models), so that each has a worker kept for it before its first
	// read; groups first seen later are added then.
	Groups []string
	// Disk, when set, adds a persistent tier below RAM.
	Disk   *DiskOptions
	Logger *slog.Logger
	// Verifier checks each object against its store's checksum once all
	// its blocks have been loaded; nil leaves every object Unverified.
	Verifier Verifier
}

func (o Options) withDefaults() Options {
	if o.BlockSize <= 0 {
		o.BlockSize = 8 << 20
	}
	if o.MemBytes <= 0 {
		o.MemBytes = 1 << 30
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Stats are cumulative counters.
type Stats struct {
	Hits, Misses      int64 // demand block lookups
	Loads, LoadErrors int64 // loader calls
	DemandLoads       int64 // loads a reader waited for from the start: what prefetch missed
	BytesLoaded       int64 // from the loader, not the disk tier
	Prefetches        int64 // prefetch loads started
	PrefetchBytes     int64 // bytes those loads brought in
	PrefetchWasted    int64 // bytes prefetched, then evicted or left at Close unread
	PrefetchUsed      int64 // bytes prefetched, then read
	PrefetchesDropped int64 // prefetches refused for want of room
	Evictions         int64
	// Block buffers: mapped fresh (each page's first touch costs more than
	// the bytes' copy), or reused from a block dropped or consumed before.
	FreshBuffers, ReusedBuffers int64
	// PrefetchAhead is the bound, as it stands, on the bytes of prefetch
	// loads under way or done and not read yet (see minAhead).
	PrefetchAhead         int64
	MemBytes, MemCapacity int64 // current use and budget
	// Disk tier; all zero without one.
	DiskHits, DiskMisses, DiskCorrupt, DiskWrites, DiskEvictions int64
	DiskBytes, DiskCapacity                                      int64
	// DiskPageCacheHits are the DiskHits read from the page cache rather
	// than the disk.
	DiskPageCacheHits int64
	// Objects checked against their store's checksum once complete: those
	// that matched, those with no usable checksum, those that did not match.
	VerifiedObjects, UnverifiedObjects, VerifyFailures int64
}

type key struct {
	source, name, version string
	index                 int64
}

type priority int

const (
	prioDemand priority = iota
	prioPrefetch
)

type blockState int

const (
	stateQueued blockState = iota
	stateLoading
	stateReady
)

type block struct {
	key   key
	obj   ObjectID
	off   int64
	size  int64
	state blockState
	prio  priority
	data  []byte
	err   error
	done  chan struct{} // closed when the load finished, well or not
	refs  int           // readers copying out of data
	stats *objCounters  // the object's
	grp   *group        // the fairness group it is scheduled in
	// unread marks a prefetched block no demand read has touched yet.
	unread bool
	// ahead: the block counts in Cache.ahead (a prefetch load started,
	// not read yet).
	ahead bool
	// doomed marks a block dropped while read: its buffer is recycled by
	// the last release.
	doomed bool
	elem   *list.Element // in Cache.lru while ready
	// served has a bit per 4 KiB page of the block, set once a read
	// covered the page whole (the kernel asks in pages); when all are set
	// the block is consumed: in Cache.consumed.
	served      []uint64
	servedPages int64
	consumed    *list.Element
	// onDisk: the disk tier holds the block (read from it, or written back).
	onDisk bool
	// fetchStart and deliveredAtStart: when the source load began, and
	// Cache.link.delivered then (zero time: not loaded from the source);
	// parts: how many requests it was split into (see PartLoader).
	fetchStart       time.Time
	deliveredAtStart int64
	parts            int
}

// Cache is a RAM block cache. Create with New; Close stops its workers.
type Cache struct {
	opts   Options
	loader Loader
	disk   *diskTier // nil without a disk tier
	verify *verifier // nil without a Verifier

	mu       sync.Mutex
	wake     *sync.Cond
	blocks   map[key]*block
	lru      list.List         // ready blocks, most recently used at the front
	consumed list.List         // ready blocks served whole, most recently at the front
	groups   map[string]*group // fairness groups, by ObjectID.Group
	order    []*group          // the same, in the order first seen
	turn     int               // where next's scan of order starts
	used     int64
	pinned   int64 // bytes of blocks held by Pin
	// ahead is the bytes of prefetch loads started and not read yet, kept
	// within aheadLimit: the larger of aheadGrown and what link says the
	// source needs in flight (see minAhead).
	ahead, aheadLimit, aheadGrown int64
	link                          linkEstimate
	sourceLoads                   int        // loads from the source under way
	demandSourceLoads             int        // the same, of demand loads
	parts                         PartLoader // the loader, when it can split a load
	free                          [][]byte   // reusable full-size buffers
	closed                        bool
	ctx                           context.Context
	cancel                        context.CancelFunc
	workers                       sync.WaitGroup
	verifyBG                      sync.WaitGroup // background checks of complete disk objects
	closeOnce                     sync.Once
	fillBuf                       sync.Pool // *[]byte of BlockSize, for Fill
	counters                      struct {
		hits, misses, loads, demandLoads, loadErrors, bytesLoaded, prefetches, dropped, evictions atomic.Int64
		prefetchBytes, prefetchWasted, prefetchUsed                                               atomic.Int64
		freshBuffers, reusedBuffers                                                               atomic.Int64
	}
	objCounters map[objKey]*objCounters // per object version, under mu
}

// New starts a cache with its load workers.
func New(opts Options, loader Loader) *Cache {
	opts = opts.withDefaults()
	c := &Cache{opts: opts, loader: loader, blocks: make(map[key]*block), groups: make(map[string]*group)}
	c.parts, _ = loader.(PartLoader)
	for _, name := range opts.Groups {
		c.groupLocked(name) // no worker runs yet
	}
	if opts.Disk != nil {
		d, err := openDiskTier(*opts.Disk, opts.BlockSize, opts.Logger)
		if err != nil {
			opts.Logger.Error("disk cache unavailable, caching in RAM only", "err", err)
		} else {
			c.disk = d
		}
	}
	if opts.Verifier != nil {
		c.verify = newVerifier(opts.Verifier)
	}
	c.wake = sync.NewCond(&c.mu)
	c.aheadGrown = min(max(minAheadBlocks*opts.BlockSize, minAhead), c.maxAhead())
	c.aheadLimit = c.aheadGrown
	c.fillBuf.New = func() any { b := make([]byte, opts.BlockSize); return &b }
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.workers.Add(opts.Workers)
	for range opts.Workers {
		go c.work()
	}
	return c
}

// Close stops the workers; loads in flight are cancelled. Reads must have
// finished: the memory of idle blocks is returned to the system. Closing
// twice is harmless.
func (c *Cache) Close() {
	c.closeOnce.Do(c.close)
}

func (c *Cache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wake.Broadcast()
	c.workers.Wait()
	if c.verify != nil {
		// A barrier: a background check starts only under this lock,
		// after seeing the context live.
		c.verify.mu.Lock()
		c.verify.mu.Unlock() //nolint:staticcheck // empty critical section on purpose
	}
	c.verifyBG.Wait() // cancelled above
	if c.disk != nil {
		c.disk.close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; e = e.Next() {
		b := e.Value.(*block)
		if b.unread {
			c.counters.prefetchWasted.Add(b.size)
		}
		if b.refs == 0 {
			c.free = append(c.free, b.data[:cap(b.data)])
			b.data = nil
		}
	}
	for _, buf := range c.free {
		syscall.Munmap(buf) // fails harmlessly for the rare heap fallback
	}
	c.free = nil
	c.blocks = map[key]*block{}
	c.lru.Init()
	c.consumed.Init()
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	used, ahead := c.used, c.aheadLimit
	c.mu.Unlock()
	k := &c.counters
	s := Stats{
		Hits: k.hits.Load(), Misses: k.misses.Load(),
		Loads: k.loads.Load(), DemandLoads: k.demandLoads.Load(), LoadErrors: k.loadErrors.Load(), BytesLoaded: k.bytesLoaded.Load(),
		Prefetches: k.prefetches.Load(), PrefetchesDropped: k.dropped.Load(), Evictions: k.evictions.Load(),
		PrefetchBytes: k.prefetchBytes.Load(), PrefetchWasted: k.prefetchWasted.Load(), PrefetchUsed: k.prefetchUsed.Load(),
		MemBytes: used, MemCapacity: c.opts.MemBytes,
		FreshBuffers: k.freshBuffers.Load(), ReusedBuffers: k.reusedBuffers.Load(),
		PrefetchAhead: ahead,
	}
	if vr := c.verify; vr != nil {
		vr.mu.Lock()
		s.VerifiedObjects, s.UnverifiedObjects, s.VerifyFailures = vr.counters.verified, vr.counters.unverified, vr.counters.failed
		vr.mu.Unlock()
	}
	if d := c.disk; d != nil {
		s.DiskHits, s.DiskMisses, s.DiskCorrupt = d.hits.Load(), d.misses.Load(), d.corrupt.Load()
		s.DiskWrites, s.DiskEvictions, s.DiskPageCacheHits = d.writes.Load(), d.evictions.Load(), d.pageCacheHits.Load()
		d.mu.Lock()
		s.DiskBytes, s.DiskCapacity = d.used, d.max
		d.mu.Unlock()
	}
	return s
}

// Object returns a reader of one object's content through the cache.
func (c *Cache) Object(id ObjectID) *Object { return &Object{c: c, id: id} }

// Object reads one remote object through the cache.
type Object struct {
	c  *Cache
	id ObjectID
}

// Size returns the object's size.
func (o *Object) Size() int64 { return o.id.Size }

// ReadAt reads len(p) bytes at off, loading missing blocks in parallel.
// It returns io.EOF when the read reaches the end of the object.
func (o *Object) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return o.read(ctx, p, off, true)
}

// Matches reports whether the object's bytes at off are p, loading its
// blocks as a read would, for a caller that checks bytes it obtained
// elsewhere. Unlike a read it serves no reader: the blocks count neither
// as hits or misses nor as consumed (see allocate).
func (o *Object) Matches(ctx context.Context, p []byte, off int64) (bool, error) {
	got := make([]byte, len(p))
	n, err := o.read(ctx, got, off, false)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
		return false, err
	}
	return bytes.Equal(got[:n], p), nil
}

// read is ReadAt; served tells a reader's read from Matches.
func (o *Object) read(ctx context.Context, p []byte, off int64, served bool) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s at %d: negative offset", o.id.Name, off)
	}
	if err := o.c.failed(o.id); err != nil {
		return 0, err
	}
	if off >= o.id.Size {
		return 0, io.EOF
	}
	var eof error
	if rem := o.id.Size - off; int64(len(p)) > rem {
		p, eof = p[:rem], io.EOF
	}
	bs := o.c.opts.BlockSize
	first, last := off/bs, (off+int64(len(p))-1)/bs
	// Ask for every block first so a read spanning several loads them at once.
	blocks := make([]*block, 0, last-first+1)
	o.c.mu.Lock()
	for i := first; i <= last; i++ {
		blocks = append(blocks, o.c.acquireLocked(o.id, i, served))
	}
	o.c.mu.Unlock()
	n := 0
	var err error
	for _, b := range blocks {
		if err == nil {
			err = o.c.wait(ctx, b)
		}
		if err != nil {
			o.c.release(b)
			continue
		}
		lo := off + int64(n) - b.off
		m := copy(p[n:], b.data[lo:])
		n += m
		if served {
			o.c.releaseServed(b, lo, lo+int64(m))
		} else {
			o.c.release(b)
		}
	}
	if err != nil {
		return n, err
	}
	// The object may have failed its check while these blocks loaded.
	if err := o.c.failed(o.id); err != nil {
		return 0, err
	}
	return n, eof
}

// ReadSlices is ReadAt without the copy: it returns the cached bytes of
// [off, off+n) in place, one slice per block, valid until release is
// called. Until then those blocks cannot be evicted. At the end of the
// object it returns what there is and io.EOF.
func (o *Object) ReadSlices(ctx context.Context, off int64, n int) (slices [][]byte, release func(), err error) {
	if off < 0 {
		return nil, nil, fmt.Errorf("read %s at %d: negative offset", o.id.Name, off)
	}
	if err := o.c.failed(o.id); err != nil {
		return nil, nil, err
	}
	if off >= o.id.Size || n <= 0 {
		return nil, func() {}, io.EOF
	}
	var eof error
	end := off + int64(n)
	if end > o.id.Size {
		end, eof = o.id.Size, io.EOF
	}
	bs := o.c.opts.BlockSize
	first, last := off/bs, (end-1)/bs
	blocks := make([]*block, 0, last-first+1)
	for i := first; i <= last; i++ {
		blocks = append(blocks, o.c.acquire(o.id, i))
	}
	release = func() {
		for _, b := range blocks {
			o.c.release(b)
		}
	}
	slices = make([][]byte, 0, len(blocks))
	for _, b := range blocks {
		if err := o.c.wait(ctx, b); err != nil {
			release()
			return nil, nil, err
		}
		lo := max(off, b.off) - b.off
		hi := min(end, b.off+b.size) - b.off
		slices = append(slices, b.data[lo:hi])
	}
	if err := o.c.failed(o.id); err != nil {
		release()
		return nil, nil, err
	}
	// Released once the reply is written: only then are the bytes served.
	release = func() {
		for _, b := range blocks {
			lo := max(off, b.off) - b.off
			o.c.releaseServed(b, lo, min(end, b.off+b.size)-b.off)
		}
	}
	return slices, release, eof
}

// Pin keeps the blocks of [off, off+length) in RAM until unpin is called,
// loading the missing ones now. Pinned blocks are never evicted; all pins
// together may hold at most half of the RAM budget.
func (o *Object) Pin(off, length int64) (unpin func(), err error) {
	c := o.c
	off = max(off, 0)
	end := min(off+length, o.id.Size)
	if end <= off {
		return func() {}, nil
	}
	bs := c.opts.BlockSize
	first, last := off/bs, (end-1)/bs
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClosed
	}
	if add := (last - first + 1) * bs; c.pinned+add > c.opts.MemBytes/2 {
		c.mu.Unlock()
		return nil, fmt.Errorf("pinning %d bytes of %s: pins may hold at most half of the %d-byte RAM budget", length, o.id.Name, c.opts.MemBytes)
	}
	blocks := make([]*block, 0, last-first+1)
	for i := first; i <= last; i++ {
		blocks = append(blocks, c.acquireLocked(o.id, i, false))
	}
	c.pinned += int64(len(blocks)) * bs
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, b := range blocks {
				c.release(b)
			}
			c.mu.Lock()
			c.pinned -= int64(len(blocks)) * bs
			c.mu.Unlock()
		})
	}, nil
}

// maxPrefetchBlocks bounds the blocks one Prefetch call queues.
const maxPrefetchBlocks = 1 << 16

// Prefetch asks for the blocks covering [off, off+length) to be loaded in
// the background, behind any demand load. It never blocks. Blocks a
// reader was served from once are skipped.
func (o *Object) Prefetch(off, length int64) {
	if off < 0 {
		off = 0
	}
	end := min(off+length, o.id.Size)
	if end <= off {
		return
	}
	bs := o.c.opts.BlockSize
	c := o.c
	// However large the object or the range, one call queues a bounded
	// number of blocks: far past any RAM budget, where they would be
	// dropped anyway.
	last := min((end-1)/bs, off/bs+maxPrefetchBlocks-1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	// A block a reader was already served and RAM has since dropped is
	// most likely still in the reader's page cache. Without a disk tier
	// it would come from the source again: a second load of a model
	// larger than RAM must cost the source only what reaches the mount.
	// With one it would come back from disk into a buffer nobody reads:
	// an mmap loader faulting in header order consumes blocks before a
	// layer-order plan reaches them, and those reloads held a quarter of
	// a cold load's buffers and the bound on prefetch ahead of readers
	// (docs/benchmarks.md). A reader that does come back for the block
	// loads it on demand.
	delivered := c.countersLocked(o.id).delivered
	for i := off / bs; i <= last; i++ {
		k := key{o.id.Source, o.id.Name, o.id.Version, i}
		if _, ok := c.blocks[k]; ok || delivered.Has(i) {
			continue
		}
		b := c.newBlock(k, o.id, prioPrefetch)
		b.grp.prefQ = append(b.grp.prefQ, b)
	}
	c.wake.Broadcast()
}

func (c *Cache) newBlock(k key, id ObjectID, prio priority) *block {
	bs := c.opts.BlockSize
	b := &block{key: k, obj: id, off: k.index * bs, prio: prio, done: make(chan struct{})}
	b.size = min(bs, id.Size-b.off)
	b.unread = prio == prioPrefetch
	b.stats = c.countersLocked(id)
	b.grp = c.groupLocked(id.Group)
	c.blocks[k] = b
	return b
}

// acquire returns the block, queued for a demand load if missing, with a
// reference that keeps it from being evicted until release.
func (c *Cache) acquire(id ObjectID, index int64) *block {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acquireLocked(id, index, true)
}

func (c *Cache) acquireLocked(id ObjectID, index int64, count bool) *block {
	k := key{id.Source, id.Name, id.Version, index}
	if c.closed {
		b := &block{err: errClosed, done: make(chan struct{})}
		close(b.done)
		return b
	}
	b, ok := c.blocks[k]
	hit := ok && b.state == stateReady
	if count && hit {
		c.counters.hits.Add(1)
	} else if count {
		c.counters.misses.Add(1)
	}
	switch {
	case !ok:
		b = c.newBlock(k, id, prioDemand)
		b.grp.demandQ = append(b.grp.demandQ, b)
		c.wake.Signal()
	case hit:
		c.lru.MoveToFront(b.elem)
	default:
		if count && b.unread && b.state == stateQueued {
			c.aheadCaughtLocked()
		}
		if b.state == stateQueued && b.prio == prioPrefetch {
			// A reader is waiting: jump the prefetch queue.
			b.prio = prioDemand
			b.grp.demandQ = append(b.grp.demandQ, b)
			c.wake.Signal()
		}
	}
	if count {
		b.stats.delivered.add(index)
	}
	// A prefetch still queued turns into a demand load: not a use of it.
	if b.unread && b.state != stateQueued {
		c.counters.prefetchUsed.Add(b.size)
	}
	b.unread = false
	c.settleAhead(b)
	b.refs++
	return b
}

// Prefetch runs ahead of readers within a bound that adapts to what the
// link needs, rather than as far as the plans and readahead windows ask
// (hundreds of MiB): every byte prefetched and not yet read holds a
// buffer, and a buffer first touched costs more than its bytes' copy
// (docs/benchmarks.md, "CPU per byte"). The bound is the larger of two:
//
//   - What the link needs in flight to keep its rate: aheadHeadroom
//     times its bandwidth-delay product, the highest delivery rate seen
//     recently times the shortest load of a whole block seen (see
//     linkEstimate). Waits alone cannot tell a link's round trip from a
//     starved CPU, where loads are slow next to the reader too and more
//     in flight only costs memory; the shortest load can: it grows with
//     the round trip, not with queueing.
//   - aheadGrown: minAhead, doubled each time a reader reaches a
//     prefetch held queued while the bound is full. That is the order
//     of reading differing from the plan's (an mmap loader faulting in
//     header order while the plan runs in layer order), which only more
//     room ahead makes useful. It never shrinks.
//
// A stream whose source keeps up thus cycles through a few buffers, the
// ones its reader consumed. Held prefetches stay queued, in order; once
// the bound reaches maxAhead nothing is held, and the RAM budget alone
// decides, dropping what has no room, as before.
const (
	minAhead       = 32 << 20
	minAheadBlocks = 4
	aheadHeadroom  = 2
)

// maxAhead is the most the bound grows to: the RAM budget.
func (c *Cache) maxAhead() int64 { return c.opts.MemBytes }

// aheadFull reports whether one more prefetch load would pass the bound.
func (c *Cache) aheadFull() bool { return c.ahead+c.opts.BlockSize > c.aheadLimit }

// aheadCaughtLocked is a demand read reaching a prefetch held queued: if
// the bound is what held it, double aheadGrown.
func (c *Cache) aheadCaughtLocked() {
	if c.aheadFull() && c.aheadGrown < c.maxAhead() {
		c.aheadGrown = min(2*c.aheadGrown, c.maxAhead())
		c.setAheadLimitLocked()
	}
}

// setAheadLimitLocked recomputes the bound from its two parts.
func (c *Cache) setAheadLimitLocked() {
	limit := min(max(c.aheadGrown, c.link.needed()), c.maxAhead())
	if limit > c.aheadLimit {
		c.wake.Broadcast()
	}
	c.aheadLimit = limit
}

// linkEstimate is what the cache has seen of its loads from the source:
// their delivery rate and their shortest latency, whose product is the
// bytes the link needs in flight. Only loads from the source count, not
// the disk tier's.
type linkEstimate struct {
	delivered int64 // bytes the loader completed
	// minLoad is the shortest load of a whole block seen (0: none yet),
	// over the cache's life: a model's loads run back to back, so a later
	// window would only see loads queued behind each other.
	minLoad time.Duration
	seen    bool
	// splitLoad stands in for minLoad until a whole block has loaded in
	// one request: the shortest split load of a whole block seen, times
	// its parts. A file's first loads are split (few run), and behind a
	// link the first unsplit one ends only after the bound has held the
	// reader's stream to minAhead for a round trip or two (four loads in
	// flight where the link needs twelve). It is at least what one
	// request would take (one request pays one round trip, and its
	// transfer is at most parts times a part's), so the bound it gives
	// errs on the side of a full link, and only until then.
	splitLoad time.Duration
	// minSplittable is the shortest load seen of a block large enough to
	// split, split or not: under splitSlowLoad, the source is near and
	// splitting only costs requests (see PartLoader).
	minSplittable  time.Duration
	splittableSeen bool
	// rates are the last delivery-rate samples, bytes/s: the bytes
	// delivered while one load ran, over its time. Their maximum is the
	// rate: the link's when the bound lets it run full, the reader's when
	// the reader is slower.
	rates [16]float64
	next  int
}

// add takes the sample of one load from the source, of size bytes (full
// says a whole block) in parts requests.
func (l *linkEstimate) add(size int64, full bool, parts int, took time.Duration, deliveredDuring int64) {
	l.delivered += size
	if full && parts == 1 && (!l.seen || took < l.minLoad) {
		l.minLoad, l.seen = took, true
	}
	if full && parts > 1 && (l.splitLoad == 0 || took*time.Duration(parts) < l.splitLoad) {
		l.splitLoad = took * time.Duration(parts)
	}
	if size >= splitParts*splitMinPart && (!l.splittableSeen || took < l.minSplittable) {
		l.minSplittable, l.splittableSeen = took, true
	}
	if took > 0 {
		l.rates[l.next] = float64(deliveredDuring) / took.Seconds()
		l.next = (l.next + 1) % len(l.rates)
	}
}

// needed is the bytes the link needs in flight, with headroom for loads
// slower than the shortest.
func (l *linkEstimate) needed() int64 {
	rate := 0.0
	for _, r := range l.rates {
		rate = max(rate, r)
	}
	latency := l.minLoad
	if !l.seen {
		latency = l.splitLoad
	}
	return int64(aheadHeadroom * rate * latency.Seconds())
}

// settleAhead takes b out of Cache.ahead once it was read or dropped, so
// a held prefetch may start.
func (c *Cache) settleAhead(b *block) {
	if !b.ahead {
		return
	}
	b.ahead = false
	c.ahead -= b.size
	c.wake.Signal()
}

func (c *Cache) wait(ctx context.Context, b *block) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cache) release(b *block) {
	c.mu.Lock()
	b.refs--
	if b.doomed && b.refs == 0 {
		c.recycle(b.data)
		b.data = nil
	}
	c.mu.Unlock()
}

// releaseServed is release after serving [lo, hi) of b to a reader. A
// block served whole becomes consumed: see allocate.
func (c *Cache) releaseServed(b *block, lo, hi int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b.refs--
	if b.doomed {
		if b.refs == 0 {
			c.recycle(b.data)
			b.data = nil
		}
		return
	}
	if b.consumed != nil || b.elem == nil || b.size <= 0 {
		return
	}
	pages := (b.size + servedPage - 1) / servedPage
	first := (lo + servedPage - 1) / servedPage // pages wholly inside [lo, hi)
	last := hi / servedPage
	if hi == b.size {
		last = pages
	}
	if first >= last {
		return
	}
	if b.served == nil {
		b.served = make([]uint64, (pages+63)/64)
	}
	for i := first; i < last; i++ {
		if w, bit := &b.served[i/64], uint64(1)<<(i%64); *w&bit == 0 {
			*w |= bit
			b.servedPages++
		}
	}
	if b.servedPages == pages {
		b.consumed = c.consumed.PushFront(b)
		b.served = nil
	}
}

// servedPage is the unit releaseServed counts a block's coverage in.
const servedPage = 4096

// writeBack stores a loaded block on disk with sum, the CRC its object's
// check took of it if any (else it is hashed here, outside the disk
// tier's lock), unless its object failed its check, also while the block
// was being written.
// It reports whether the block is on disk.
func (c *Cache) writeBack(id ObjectID, index int64, p []byte, sum blockSum) bool {
	if c.failed(id) != nil {
		return false
	}
	if !sum.crc {
		sum = xxSum(p)
	}
	stored, completed := c.disk.put(id, index, p, sum)
	if c.failed(id) != nil {
		if err := c.disk.dropObject(id); err != nil {
			c.opts.Logger.Error("could not drop the blocks of a damaged object", "file", id.Name, "err", err)
		}
		return false
	}
	// An object usually passes its check when its last block is loaded,
	// before that block reaches the disk: remember the pass once the
	// object is complete there, so the next process passes it through.
	if !completed {
		return stored
	}
	if st, _ := c.Object(id).Verification(); st == Verified {
		c.rememberVerified(id)
	}
	return stored
}

// work is one load worker: demand loads first, then prefetches.
func (c *Cache) work() {
	defer c.workers.Done()
	for {
		c.mu.Lock()
		var b *block
		for b == nil {
			if c.closed {
				c.failQueued()
				c.mu.Unlock()
				return
			}
			b = c.next()
			if b == nil {
				c.wake.Wait()
			}
		}
		buf := c.allocate(b)
		if buf == nil {
			c.drop(b)
			c.mu.Unlock()
			continue
		}
		b.state = stateLoading
		if b.prio == prioPrefetch {
			b.ahead = true
			c.ahead += b.size
		}
		c.mu.Unlock()

		if b.prio == prioPrefetch {
			c.counters.prefetches.Add(1)
			c.counters.prefetchBytes.Add(b.size)
			b.stats.prefetched.Add(b.size)
		} else {
			c.counters.demandLoads.Add(1)
		}
		p := buf[:b.size]
		if c.disk != nil && c.disk.get(b.obj, b.key.index, p) {
			b.onDisk = true // published by finish
			claimed, _, err := c.verifyLoaded(b, p)
			c.finish(b, buf, err, false)
			c.hashLoaded(b, claimed, err)
			continue
		}
		c.counters.loads.Add(1)
		b.stats.loads.Add(1)
		c.mu.Lock()
		b.fetchStart, b.deliveredAtStart = time.Now(), c.link.delivered
		demand := b.prio != prioPrefetch
		c.sourceLoads++
		if demand {
			c.demandSourceLoads++
		}
		b.parts = c.partsLocked(b.size, demand)
		c.mu.Unlock()
		var err error
		if b.parts > 1 {
			err = c.parts.LoadBlockParts(c.ctx, b.obj, b.off, p, b.parts)
		} else {
			err = c.loader.LoadBlock(c.ctx, b.obj, b.off, p)
		}
		claimed := false
		var sum blockSum
		if err == nil {
			c.counters.bytesLoaded.Add(b.size)
			b.stats.fetched.Add(b.size)
			claimed, sum, err = c.verifyLoaded(b, p)
		}
		writeBack := err == nil && c.disk != nil
		c.finish(b, buf, err, writeBack)
		c.hashLoaded(b, claimed, err)
		if writeBack {
			// Readers are already served from RAM; the reference taken
			// in finish keeps the buffer from being recycled meanwhile.
			stored := c.writeBack(b.obj, b.key.index, p, sum)
			c.mu.Lock()
			b.onDisk = stored
			c.mu.Unlock()
			c.release(b)
		}
	}
}

// groupLocked returns the named group, adding it on first use.
func (c *Cache) groupLocked(name string) *group {
	g := c.groups[name]
	if g == nil {
		g = &group{}
		c.groups[name] = g
		c.order = append(c.order, g)
	}
	return g
}

// group is one fairness group's queues and the loads it has under way.
type group struct {
	demandQ, prefQ []*block
	loading        int // blocks taken by a worker and not yet finished
}

// head drops the entries at the front of one of g's queues that were
// promoted or already handled, and reports whether a block is left.
func (g *group) head(demand bool) bool {
	q := &g.prefQ
	if demand {
		q = &g.demandQ
	}
	for len(*q) > 0 {
		b := (*q)[0]
		if b.state == stateQueued && (demand || b.prio == prioPrefetch) {
			return true
		}
		(*q)[0] = nil
		*q = (*q)[1:]
	}
	return false
}

func (g *group) pop(demand bool) *block {
	q := &g.prefQ
	if demand {
		q = &g.demandQ
	}
	b := (*q)[0]
	(*q)[0] = nil
	*q = (*q)[1:]
	g.loading++
	return b
}

// next takes the next queued block for a worker: demand before prefetch,
// and among the groups with that kind waiting, the one with the fewest
// loads under way (taking turns on a tie), so an idle group's demand goes
// first. A group with loads under way takes another worker only while one
// stays free for every other group that has none (up to half the
// workers): however many groups' sources stall, each of the others can
// always start a load. With one group this is plain FIFO over every worker,
// but prefetches never take the last quarter of them.
func (c *Cache) next() *block {
	n := len(c.order)
	free, idle := c.opts.Workers, 0
	for _, g := range c.order {
		free -= g.loading
		if g.loading == 0 {
			idle++
		}
	}
	for _, demand := range []bool{true, false} {
		if !demand && free-1 < c.opts.Workers/4 {
			// The last quarter of the workers is kept for demand: a read
			// that misses starts its load at once instead of waiting for
			// a prefetch of 8 MiB to finish.
			break
		}
		if !demand && c.aheadFull() && c.aheadLimit < c.maxAhead() {
			// Enough is on its way or waiting to be read: see minAhead.
			// A read that settles a block, or reaches a held one, wakes
			// the workers.
			break
		}
		best := -1
		for i := range n {
			k := (c.turn + i) % n
			g := c.order[k]
			if !g.head(demand) {
				continue
			}
			if g.loading > 0 && free-1 < min(idle, c.opts.Workers/2) {
				continue // the last free workers are the idle groups'
			}
			if best < 0 || g.loading < c.order[best].loading {
				best = k
			}
		}
		if best >= 0 {
			c.turn = best + 1
			return c.order[best].pop(demand)
		}
	}
	return nil
}

// allocate returns a buffer for b, evicting to stay in budget. A prefetch
// that would need to evict an unread prefetched block gets nil instead.
func (c *Cache) allocate(b *block) []byte {
	for c.used+c.opts.BlockSize > c.opts.MemBytes {
		if !c.evictOne(b.prio == prioPrefetch) {
			if b.prio == prioPrefetch {
				return nil
			}
			break // demand proceeds over budget; bounded by Workers blocks
		}
	}
	if len(c.free) == 0 {
		c.reuseConsumed()
	}
	if n := len(c.free); n > 0 {
		buf := c.free[n-1]
		c.free = c.free[:n-1]
		c.used += c.opts.BlockSize
		c.counters.reusedBuffers.Add(1)
		return buf
	}
	// Block buffers live outside the Go heap, so the budget bounds what the
	// process really holds instead of a target the GC overshoots by GOGC.
	buf, err := syscall.Mmap(-1, 0, int(c.opts.BlockSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		if b.prio == prioPrefetch {
			return nil
		}
		// Out of address space or memory: fall back to the heap for demand.
		buf = make([]byte, c.opts.BlockSize)
	} else if c.opts.BlockSize >= hugePage {
		// Huge pages cut what a fresh block costs to fill by a third
		// (4.5 → 3.0 CPU-s/GiB on the 2-core VM of docs/benchmarks.md, where
		// transparent huge pages are "madvise"); the kernel aligns
		// mappings this large to them. Best effort.
		unix.Madvise(buf, unix.MADV_HUGEPAGE)
	}
	c.used += c.opts.BlockSize
	c.counters.freshBuffers.Add(1)
	return buf
}

// hugePage is the size of a transparent huge page on x86-64 and arm64
// with 4 KiB pages.
const hugePage = 2 << 20

// reuseConsumed evicts the block consumed longest ago that nobody is
// reading, if any, so a load lands in memory already used rather than in
// fresh pages. The first write of a fresh page costs far more than the
// bytes' copy (about 4.5 CPU-s/GiB to fill fresh 4 KiB pages and read
// them back on the 2-core VM of docs/benchmarks.md; 0.06 to do it again
// in the same pages), and a consumed block is worth little in RAM: the
// reader's page cache holds what it was served, and a disk tier holds it
// too. So a stream through the cache works in the pages of its prefetch
// window, not in a new budget's worth.
func (c *Cache) reuseConsumed() {
	for e := c.consumed.Back(); e != nil; e = e.Prev() {
		if v := e.Value.(*block); v.refs == 0 && !c.keepForCheck(v) {
			c.evict(v)
			return
		}
	}
}

// keepForCheck reports whether b must stay in RAM for its object's ordered
// check (SHA, MD5), which hashes blocks in order and has not reached b:
// without a disk tier, dropping it would cost a second fetch.
func (c *Cache) keepForCheck(b *block) bool {
	return c.verify != nil && !b.onDisk && c.verify.unhashed(b)
}

// evict drops a ready block nobody is reading and keeps its buffer.
func (c *Cache) evict(v *block) {
	c.lru.Remove(v.elem)
	if v.consumed != nil {
		c.consumed.Remove(v.consumed)
		v.consumed = nil
	}
	delete(c.blocks, v.key)
	c.recycle(v.data)
	v.data = nil
	c.counters.evictions.Add(1)
	if v.unread {
		c.counters.prefetchWasted.Add(v.size)
	}
	c.settleAhead(v)
}

// evictOne drops the least recently used block nobody is reading. For a
// prefetch it skips blocks prefetched but not read yet. Blocks an ordered
// check has yet to hash go last: dropping one costs a second fetch.
func (c *Cache) evictOne(forPrefetch bool) bool {
	for _, spare := range []bool{c.verify != nil, false} {
		for e := c.lru.Back(); e != nil; e = e.Prev() {
			v := e.Value.(*block)
			if v.refs > 0 || (forPrefetch && v.unread) || (spare && c.keepForCheck(v)) {
				continue
			}
			c.evict(v)
			return true
		}
		if !spare {
			break
		}
	}
	return false
}

// recycle keeps buf for the next load. Buffers are never unmapped while
// the cache runs: in-flight copies may still read them, and the free list
// never holds more than the budget's worth anyway.
func (c *Cache) recycle(buf []byte) {
	c.used -= c.opts.BlockSize
	c.free = append(c.free, buf[:cap(buf)])
}

func (c *Cache) drop(b *block) {
	b.grp.loading--
	c.counters.dropped.Add(1)
	delete(c.blocks, b.key)
	b.err = errDropped
	close(b.done)
}

var errDropped = errors.New("prefetch dropped: cache full")

// finish publishes a load's outcome; hold takes a reference for the caller.
func (c *Cache) finish(b *block, buf []byte, err error, hold bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hold {
		b.refs++
	}
	b.grp.loading--
	if !b.fetchStart.IsZero() {
		c.sourceLoads--
		if b.prio != prioPrefetch {
			c.demandSourceLoads--
		}
	}
	if len(c.order) > 1 {
		// A worker left idle by its group's limit may take a load now.
		c.wake.Signal()
	}
	if err != nil {
		c.counters.loadErrors.Add(1)
		c.settleAhead(b)
		c.recycle(buf)
		// Forget the block so the next read tries again.
		delete(c.blocks, b.key)
		b.err = fmt.Errorf("block %d of %s: %w", b.key.index, b.obj.Name, err)
	} else {
		b.data = buf[:b.size]
		b.state = stateReady
		b.elem = c.lru.PushFront(b)
		if !b.fetchStart.IsZero() {
			// A split load stands in for the bound's latency (a block in
			// one request) only until an unsplit one ends: see splitLoad.
			c.link.add(b.size, b.size == c.opts.BlockSize, max(b.parts, 1), time.Since(b.fetchStart), c.link.delivered+b.size-b.deliveredAtStart)
			c.setAheadLimitLocked()
		}
	}
	close(b.done)
}

// partsLocked is how many requests a source load of size bytes is split
// into, with c.sourceLoads loads under way, it included: see PartLoader.
// Demand loads are split while fewer than splitParts of them are under
// way: one reader or a few waiting gain, while many readers at once keep
// to a request each, within the connections the mount's store clients
// keep (twice Workers).
func (c *Cache) partsLocked(size int64, demand bool) int {
	few := c.sourceLoads < splitParts || (demand && c.demandSourceLoads < splitParts)
	if c.parts == nil || !few || (c.link.splittableSeen && c.link.minSplittable < splitSlowLoad) {
		return 1
	}
	return int(max(1, min(splitParts, size/splitMinPart)))
}

// failQueued ends every queued load when the cache closes.
func (c *Cache) failQueued() {
	for _, g := range c.order {
		for _, q := range [][]*block{g.demandQ, g.prefQ} {
			for _, b := range q {
				if b.state == stateQueued {
					b.state = stateLoading // so no other worker touches it
					b.err = errClosed
					delete(c.blocks, b.key)
					close(b.done)
				}
			}
		}
		g.demandQ, g.prefQ = nil, nil
	}
}

var errClosed = errors.New("block cache closed")
