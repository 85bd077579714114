package blockcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Verifier checks whole objects against a checksum their store keeps. It
// is declared here and implemented by whoever knows the stores, so that
// blockcache stays ignorant of them.
type Verifier interface {
	// Check starts the check of one object version, or returns nil when
	// nothing can verify it: the object is then Unverified.
	Check(id ObjectID) ObjectCheck
}

// Purger is a Loader that keeps copies of blocks beyond this cache, as
// a cluster-wide tier does. PurgeObject is called once for an object that
// failed its check, so that its copies, wherever they came from, are
// removed; it must not block the read that found the failure.
type Purger interface {
	PurgeObject(id ObjectID)
}

// ObjectCheck is the check of one object version.
type ObjectCheck interface {
	// Ordered reports whether the check needs the object's bytes in
	// order (SHA, MD5) rather than block by block in any order (CRCs,
	// combined per block).
	Ordered() bool
	// Block shows the check one block's bytes, each block once. When
	// Ordered, in index order from 0, one call at a time; otherwise in
	// any order, possibly concurrently. An error ends the check: one
	// wrapping ErrUnverifiable leaves the object Unverified, any other
	// fails it.
	Block(ctx context.Context, index int64, p []byte) error
	// Finish is called once, after Block saw every block. It returns nil
	// when the object matches, an error wrapping ErrUnverifiable when it
	// could not be checked after all, and any other error for a mismatch.
	Finish(ctx context.Context) error
}

// BlockCRC is an unordered ObjectCheck that sums each block with
// CRC64NVME, the sum the disk tier records for a block (see blockSum):
// BlockCRC64NVME is its Block, returning that sum, and ok false when the
// check summed the block otherwise.
type BlockCRC interface {
	BlockCRC64NVME(ctx context.Context, index int64, p []byte) (sum uint64, ok bool, err error)
}

var (
	// ErrCorrupt is what every read of an object that failed its
	// whole-object check returns, wrapped with the mismatch.
	ErrCorrupt = errors.New("content does not match the store's checksum")
	// ErrUnverifiable: the store's checksum could not be compared after
	// all (gone, changed version, a block that could not be read back).
	ErrUnverifiable = errors.New("cannot be verified")
)

// VerifyState is where an object version stands against its store's
// checksum.
type VerifyState int

const (
	// VerifyPending: not every block has been loaded yet.
	VerifyPending VerifyState = iota
	// Verified: every byte matched the store's checksum.
	Verified
	// Unverified: the store keeps no checksum that could be used.
	Unverified
	// VerifyFailed: the bytes do not match; reads fail with ErrCorrupt.
	VerifyFailed
)

func (s VerifyState) String() string {
	switch s {
	case Verified:
		return "verified"
	case Unverified:
		return "unverified"
	case VerifyFailed:
		return "failed"
	}
	return "pending"
}

// objVerify is one object version's check in progress or its outcome.
type objVerify struct {
	check ObjectCheck // nil once settled, or when there is none
	seen  BlockSet
	n     int64 // blocks in seen (unordered: whose Block returned)
	state VerifyState
	err   error // the mismatch, when failed

	// An ordered check is fed as the prefix of loaded blocks grows:
	// blocks [0, next) were hashed. One goroutine at a time feeds it
	// (busy); again tells it that a block it may want was published
	// while it looked; closing, that the load completing the object
	// waits to take over. sums has the xxhash64 of each block loaded
	// past next, so that one RAM dropped before the hash reached it is
	// read back, or fetched again, as exactly the bytes served.
	next                 int64
	busy, again, closing bool
	sums                 map[int64]uint64
}

// verifier holds the per-object checks; its own lock, so that the hashing
// and the store round trip never hold the cache's.
type verifier struct {
	v        Verifier
	mu       sync.Mutex
	handoff  *sync.Cond // on mu: an ordered check's feeder let go
	objs     map[objKey]*objVerify
	passes   map[objKey]bool // background passes over complete disk objects
	failures []ObjectID      // in the order they failed
	// anyFailed lets every read skip the lock while nothing failed.
	anyFailed atomic.Bool
	counters  struct{ verified, unverified, failed int64 }
}

func newVerifier(v Verifier) *verifier {
	vr := &verifier{v: v, objs: map[objKey]*objVerify{}, passes: map[objKey]bool{}}
	vr.handoff = sync.NewCond(&vr.mu)
	return vr
}

// stateLocked returns id's check, starting it on first use.
func (vr *verifier) stateLocked(id ObjectID) *objVerify {
	k := objKey{id.Source, id.Name, id.Version}
	ov := vr.objs[k]
	if ov == nil {
		ov = &objVerify{}
		if ov.check = vr.v.Check(id); ov.check == nil {
			ov.state = Unverified
			vr.counters.unverified++
		}
		vr.objs[k] = ov
	}
	return ov
}

// checksAlone reports whether id's check, still under way, takes each
// block on its own (CRCs) and so never reads one back from disk.
func (c *Cache) checksAlone(id ObjectID) bool {
	vr := c.verify
	if vr == nil {
		return false
	}
	vr.mu.Lock()
	defer vr.mu.Unlock()
	ov := vr.stateLocked(id)
	return ov.state == VerifyPending && ov.check != nil && !ov.check.Ordered()
}

// orderedLocked reports whether ov is an ordered check still under way.
func (ov *objVerify) orderedLocked() bool {
	return ov.state == VerifyPending && ov.check != nil && ov.check.Ordered()
}

// Verification returns where the object version stands against its
// store's checksum; Unverified when the cache has no Verifier.
func (o *Object) Verification() (VerifyState, error) {
	vr := o.c.verify
	if vr == nil {
		return Unverified, nil
	}
	vr.mu.Lock()
	defer vr.mu.Unlock()
	ov := vr.stateLocked(o.id)
	if ov.state == VerifyPending && o.id.Size == 0 {
		// No byte to load, so none that could be damaged: its size is
		// pinned by the listing.
		return Verified, nil
	}
	return ov.state, ov.err
}

// Fail marks the object as not what its store holds, for a mismatch found
// outside the cache: bytes of it served from elsewhere that differ from
// its blocks. Its blocks are dropped and reads of it fail from now on, as
// after a failed check, even if its blocks had passed one: a reader may
// hold the other bytes. It returns the error reads get.
func (o *Object) Fail(cause error) error {
	c := o.c
	if c.verify == nil {
		return fmt.Errorf("%s: %w: %w", o.id.Name, ErrCorrupt, cause)
	}
	vr := c.verify
	vr.mu.Lock()
	ov := vr.stateLocked(o.id)
	switch ov.state {
	case Verified:
		vr.counters.verified--
		ov.state = VerifyPending
	case Unverified:
		vr.counters.unverified--
		ov.state = VerifyPending
	}
	vr.mu.Unlock()
	return c.settle(o.id, ov, cause, true)
}

// VerifyFailures returns the objects that failed their check, in the
// order they failed.
func (c *Cache) VerifyFailures() []ObjectID {
	if c.verify == nil {
		return nil
	}
	c.verify.mu.Lock()
	defer c.verify.mu.Unlock()
	return append([]ObjectID(nil), c.verify.failures...)
}

// failed returns the error reads of id get once it failed its check.
func (c *Cache) failed(id ObjectID) error {
	vr := c.verify
	if vr == nil || !vr.anyFailed.Load() {
		return nil
	}
	vr.mu.Lock()
	defer vr.mu.Unlock()
	if ov := vr.objs[objKey{id.Source, id.Name, id.Version}]; ov != nil && ov.state == VerifyFailed {
		return ov.err
	}
	return nil
}

// verifyBlock shows block index of id, loaded with bytes p that the caller
// does not keep, to the object's check. When it is the object's last, the
// object is checked before the caller publishes the block: a mismatch is
// returned (wrapping ErrCorrupt), and the object's cached blocks are
// dropped, so that the read that completes a damaged object fails, and
// every read after it.
func (c *Cache) verifyBlock(id ObjectID, index int64, p []byte) error {
	_, _, err := c.checkBlock(id, index, p, false, true)
	return err
}

// verifyLoaded is verifyBlock for a load worker, which publishes b in RAM
// next: when b is the next block of an ordered check, b is hashed only
// after it is published (see hashLoaded), off its readers' path, and a
// reference keeps it in RAM until then.
func (c *Cache) verifyLoaded(b *block, p []byte) (claimed bool, sum blockSum, err error) {
	claimed, sum, err = c.checkBlock(b.obj, b.key.index, p, true, true)
	if claimed {
		c.mu.Lock()
		b.refs++ // b is still loading: nothing can evict it yet
		c.mu.Unlock()
	}
	return claimed, sum, err
}

// hashLoaded runs after a load worker published b: a claimed block is
// hashed, and the hash carried on over the blocks after it; any other
// loaded block may be the one a stalled ordered check waits for.
func (c *Cache) hashLoaded(b *block, claimed bool, err error) {
	vr := c.verify
	if vr == nil || err != nil {
		return
	}
	if !claimed {
		vr.mu.Lock()
		ov := vr.objs[objKey{b.key.source, b.key.name, b.key.version}]
		start := false
		if ov != nil && ov.orderedLocked() && !ov.closing {
			// A feeder at work may have looked at b before it was
			// published: it looks again before it lets go.
			ov.again = ov.again || ov.busy
			start = !ov.busy && ov.next == b.key.index
			ov.busy = ov.busy || start
		}
		vr.mu.Unlock()
		if !start {
			return
		}
	}
	c.verifyBG.Add(1)
	go func() {
		defer c.verifyBG.Done()
		var p []byte
		if claimed {
			p = b.data
			defer c.release(b)
		}
		c.feed(b.obj, p, true)
	}()
}

// checkBlock is verifyBlock; async lets it leave the hashing of p to the
// caller, which then owns the object's ordered check (claimed) and must
// call feed; drop is false for a caller that pins the object on disk, and
// drops it itself once it has let go.
func (c *Cache) checkBlock(id ObjectID, index int64, p []byte, async, drop bool) (claimed bool, sum blockSum, err error) {
	vr := c.verify
	if vr == nil {
		return false, blockSum{}, nil
	}
	vr.mu.Lock()
	ov := vr.stateLocked(id)
	if ov.state != VerifyPending || ov.seen.Has(index) {
		err := ov.err
		vr.mu.Unlock()
		return false, blockSum{}, err
	}
	ov.seen.add(index)
	total := c.blocksOf(id)
	check := ov.check
	if !check.Ordered() {
		vr.mu.Unlock()
		var berr error
		if bc, ok := check.(BlockCRC); ok {
			var crc bool
			sum.v, crc, berr = bc.BlockCRC64NVME(c.ctx, index, p)
			sum.crc = crc && berr == nil
		} else {
			berr = check.Block(c.ctx, index, p)
		}
		vr.mu.Lock()
		ov.n++
		last := ov.n == total
		vr.mu.Unlock()
		if berr != nil {
			return false, blockSum{}, c.settle(id, ov, berr, drop)
		}
		if !sum.crc {
			sum = blockSum{}
		}
		if !last {
			return false, sum, nil
		}
		return false, sum, c.settle(id, ov, check.Finish(c.ctx), drop)
	}

	ov.n++
	if ov.n == total {
		// The completing load hashes what is left, in order, before its
		// block is published.
		ov.closing = true
		for ov.busy {
			vr.handoff.Wait()
		}
		if ov.state != VerifyPending {
			err := ov.err
			vr.mu.Unlock()
			return false, blockSum{}, err
		}
		ov.busy = true
		vr.mu.Unlock()
		err := c.feedRest(id, ov, check, index, p)
		if err == nil {
			err = check.Finish(c.ctx)
		}
		err = c.settle(id, ov, err, drop)
		vr.mu.Lock()
		ov.busy = false
		vr.handoff.Broadcast()
		vr.mu.Unlock()
		return false, blockSum{}, err
	}
	if index == ov.next && !ov.busy && !ov.closing {
		ov.busy = true
		vr.mu.Unlock()
		if async {
			return true, blockSum{}, nil
		}
		c.feed(id, p, drop)
		return false, blockSum{}, c.failed(id)
	}
	vr.mu.Unlock()
	// Hashed later: keep what it was, in case RAM drops it meanwhile.
	kept := xxhash.Sum64(p)
	vr.mu.Lock()
	if ov.orderedLocked() && index >= ov.next {
		if ov.sums == nil {
			ov.sums = map[int64]uint64{}
		}
		ov.sums[index] = kept
	}
	vr.mu.Unlock()
	return false, blockSum{}, nil
}

// blocksOf is the number of blocks of id.
func (c *Cache) blocksOf(id ObjectID) int64 {
	return (id.Size + c.opts.BlockSize - 1) / c.opts.BlockSize
}

// feed carries id's ordered check on from its next block, whose bytes are
// p when the caller has them, over every following block already loaded
// and still at hand in RAM or on disk; a block loaded once and dropped
// since is fetched again (it must be the same bytes). It stops at a block
// not loaded yet, or still loading (its worker carries on once it is
// published), and lets go of the check. The caller owns the check (busy);
// drop is as for checkBlock.
func (c *Cache) feed(id ObjectID, p []byte, drop bool) {
	vr := c.verify
	k := objKey{id.Source, id.Name, id.Version}
	total := c.blocksOf(id)
	buf := c.fillBuf.Get().(*[]byte)
	defer c.fillBuf.Put(buf)
	for {
		vr.mu.Lock()
		ov := vr.objs[k]
		if p == nil {
			ov.again = false
		}
		if !ov.orderedLocked() || (ov.closing && p == nil) || c.ctx.Err() != nil || ov.next >= total || (p == nil && !ov.seen.Has(ov.next)) {
			if ov.again && ov.orderedLocked() && !ov.closing && c.ctx.Err() == nil {
				ov.again = false
				vr.mu.Unlock()
				continue
			}
			ov.busy = false
			vr.handoff.Broadcast()
			vr.mu.Unlock()
			return
		}
		i, check := ov.next, ov.check
		sum, hasSum := ov.sums[i]
		vr.mu.Unlock()

		q, release, err := p, func() {}, error(nil)
		if q == nil {
			q, release, err = c.readBack(id, i, (*buf)[:min(c.opts.BlockSize, id.Size-i*c.opts.BlockSize)], false, sum, hasSum)
		}
		if err == nil && q == nil {
			// Still loading: its worker carries on once it is published.
			vr.mu.Lock()
			if ov.again {
				ov.again = false
				vr.mu.Unlock()
				continue
			}
			ov.busy = false
			vr.handoff.Broadcast()
			vr.mu.Unlock()
			return
		}
		if err == nil {
			err = check.Block(c.ctx, i, q)
			release()
		}
		p = nil
		if err != nil {
			c.settle(id, ov, err, drop)
			vr.mu.Lock()
			ov.busy = false
			vr.handoff.Broadcast()
			vr.mu.Unlock()
			return
		}
		vr.mu.Lock()
		ov.next++
		delete(ov.sums, i)
		vr.mu.Unlock()
	}
}

// feedRest hashes id's blocks from the check's next one to the end, for
// the load that completes the object: block index is p, the others are
// read back from RAM (waiting for one being finished), the disk tier, or
// fetched again.
func (c *Cache) feedRest(id ObjectID, ov *objVerify, check ObjectCheck, index int64, p []byte) error {
	vr := c.verify
	total := c.blocksOf(id)
	buf := c.fillBuf.Get().(*[]byte)
	defer c.fillBuf.Put(buf)
	vr.mu.Lock()
	first := ov.next
	vr.mu.Unlock()
	for i := first; i < total; i++ {
		q, release := p, func() {}
		if i != index {
			vr.mu.Lock()
			sum, hasSum := ov.sums[i]
			vr.mu.Unlock()
			var err error
			q, release, err = c.readBack(id, i, (*buf)[:min(c.opts.BlockSize, id.Size-i*c.opts.BlockSize)], true, sum, hasSum)
			if err != nil {
				return err
			}
		}
		err := check.Block(c.ctx, i, q)
		release()
		if err != nil {
			return err
		}
		vr.mu.Lock()
		ov.next++
		delete(ov.sums, i)
		vr.mu.Unlock()
	}
	return nil
}

// readBack returns the bytes of block index of id, loaded before, for an
// ordered check: from RAM (waiting for a load in flight when wait is set,
// else returning nil bytes and no error while one is), from the disk tier
// into buf, or else fetched again into buf. Bytes not from RAM must match
// sum, the block's xxhash64 when it was first loaded, when known: a
// mismatch is a failure of the object; a block fetched again with no sum
// to compare it with cannot be verified.
func (c *Cache) readBack(id ObjectID, index int64, buf []byte, wait bool, sum uint64, hasSum bool) ([]byte, func(), error) {
	c.mu.Lock()
	b, ok := c.blocks[key{id.Source, id.Name, id.Version, index}]
	switch {
	case ok && b.state == stateReady:
		b.refs++
		c.mu.Unlock()
		return b.data, func() { c.release(b) }, nil
	case ok && !wait:
		c.mu.Unlock()
		return nil, nil, nil
	case ok && b.state == stateLoading:
		b.refs++
		c.mu.Unlock()
		if c.wait(c.ctx, b) == nil {
			return b.data, func() { c.release(b) }, nil
		}
		c.release(b)
	default:
		c.mu.Unlock()
	}
	from := "the disk cache"
	if c.disk == nil || !c.disk.get(id, index, buf) {
		if !hasSum {
			return nil, nil, fmt.Errorf("%w: block %d is no longer cached", ErrUnverifiable, index)
		}
		from = "the source"
		c.counters.loads.Add(1)
		oc := c.countersFor(id)
		oc.loads.Add(1)
		if err := c.loader.LoadBlock(c.ctx, id, index*c.opts.BlockSize, buf); err != nil {
			c.counters.loadErrors.Add(1)
			return nil, nil, fmt.Errorf("%w: fetching block %d again: %w", ErrUnverifiable, index, err)
		}
		c.counters.bytesLoaded.Add(int64(len(buf)))
		oc.fetched.Add(int64(len(buf)))
	}
	if hasSum && xxhash.Sum64(buf) != sum {
		return nil, nil, fmt.Errorf("block %d read back from %s is not the bytes first loaded", index, from)
	}
	return buf, func() {}, nil
}

// settle records the outcome of id's check, once: err nil is a match, an
// error wrapping ErrUnverifiable (or one after Close) leaves the object
// Unverified, any other fails it, and then its cached blocks are dropped
// when drop is set. It returns the error reads of id get from now on.
func (c *Cache) settle(id ObjectID, ov *objVerify, err error, drop bool) error {
	vr := c.verify
	vr.mu.Lock()
	if ov.state != VerifyPending {
		err := ov.err
		vr.mu.Unlock()
		return err
	}
	ov.check, ov.seen, ov.sums = nil, BlockSet{}, nil // settled: none is needed again
	switch {
	case err == nil:
		ov.state = Verified
		vr.counters.verified++
	case errors.Is(err, ErrUnverifiable) || c.ctx.Err() != nil:
		ov.state = Unverified
		vr.counters.unverified++
		c.opts.Logger.Warn("object not verified against the store's checksum", "file", id.Name, "err", err)
		err = nil
	default:
		ov.state = VerifyFailed
		ov.err = fmt.Errorf("%s: %w: %w", id.Name, ErrCorrupt, err)
		vr.counters.failed++
		vr.failures = append(vr.failures, id)
		vr.anyFailed.Store(true)
		err = ov.err
	}
	state := ov.state
	vr.mu.Unlock()
	if state == Verified {
		c.rememberVerified(id)
	}
	if err != nil {
		c.opts.Logger.Error("object does not match the store's checksum: its cached blocks are dropped and reads of it fail",
			"file", id.Name, "err", err)
		// Copies beyond this node (a shared tier) go too, pinned or not:
		// other nodes would fail on them as well.
		if p, ok := c.loader.(Purger); ok {
			p.PurgeObject(id)
		}
		if !drop {
			return err
		}
		if derr := c.DropObject(id); derr != nil {
			c.opts.Logger.Error("could not drop the blocks of a damaged object", "file", id.Name, "err", derr)
		}
	}
	return err
}

// unhashed reports whether b is a block its object's ordered check has
// loaded but not hashed yet, which RAM should keep while it can.
func (vr *verifier) unhashed(b *block) bool {
	vr.mu.Lock()
	defer vr.mu.Unlock()
	ov := vr.objs[objKey{b.key.source, b.key.name, b.key.version}]
	return ov != nil && ov.orderedLocked() && b.key.index >= ov.next
}

// verifyFile runs the check of a complete, block-verified disk object from
// its data file, for the blocks no load has shown it yet. It reports
// whether the object may be handed to the kernel.
func (c *Cache) verifyFile(id ObjectID, f io.ReaderAt) bool {
	bs := c.opts.BlockSize
	buf := make([]byte, bs)
	for i := int64(0); i*bs < id.Size; i++ {
		if st, _ := c.Object(id).Verification(); st != VerifyPending || c.ctx.Err() != nil {
			break
		}
		p := buf[:min(bs, id.Size-i*bs)]
		if n, _ := f.ReadAt(p, i*bs); n != len(p) {
			return false
		}
		if _, _, err := c.checkBlock(id, i, p, false, false); err != nil {
			return false
		}
	}
	st, _ := c.Object(id).Verification()
	return st == Verified || st == Unverified
}

// storeMarkName is the file, in a disk object's directory, that remembers
// that the object passed its store's check, with the stamp (inode, size,
// ctime) of the data file then: any later change to the file voids it.
// So a new process passes through what warm verified without reading it
// again.
const storeMarkName = "store-verified"

// rememberVerified writes the mark for an object complete on disk. One
// not yet complete there (its last block still being written back) gets
// none: a later process checks it from its file once.
func (c *Cache) rememberVerified(id ObjectID) {
	t := c.disk
	if t == nil || !c.Object(id).CompleteOnDisk() {
		return
	}
	dir := filepath.Join(t.root, objectDirID(id, c.opts.BlockSize))
	data, err := os.Open(filepath.Join(dir, "data"))
	if err != nil {
		return
	}
	defer data.Close()
	stamp, ok := stampOf(data)
	if !ok {
		return
	}
	path := filepath.Join(dir, storeMarkName)
	if os.WriteFile(path+".tmp", []byte(stamp+"\n"), filePerm) == nil {
		os.Rename(path+".tmp", path)
	}
}

// markedVerified reports whether f, an object's open data file, is as it
// was when the object passed its store's check, and if so records it.
func (c *Cache) markedVerified(id ObjectID, f *os.File) bool {
	stamp, ok := stampOf(f)
	if !ok {
		return false
	}
	old, err := readMark(filepath.Join(c.disk.root, objectDirID(id, c.opts.BlockSize), storeMarkName), maxMark)
	if err != nil || strings.TrimSpace(string(old)) != stamp {
		return false
	}
	vr := c.verify
	vr.mu.Lock()
	defer vr.mu.Unlock()
	if ov := vr.stateLocked(id); ov.state == VerifyPending {
		ov.state, ov.check = Verified, nil
		vr.counters.verified++
	}
	return true
}
