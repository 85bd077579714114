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
)

// Verifier checks whole objects against a checksum their store keeps. It
// is declared here and implemented by whoever knows the stores, so that
// blockcache stays ignorant of them.
type Verifier interface {
	// Check starts the check of one object version, or returns nil when
	// nothing can verify it: the object is then Unverified.
	Check(id ObjectID) ObjectCheck
}

// ObjectCheck is the check of one object version.
type ObjectCheck interface {
	// Ordered reports whether Finish needs the object's bytes in order
	// (SHA, MD5) instead of what Block saw (CRCs, combined per block).
	Ordered() bool
	// Block sees each block once, in any order, possibly concurrently;
	// only called when Ordered is false.
	Block(index int64, p []byte)
	// Finish is called once, when every block has been loaded; whole
	// reads the object's bytes in order when Ordered (nil otherwise). It
	// returns nil when the object matches, an error wrapping
	// ErrUnverifiable when it could not be checked after all, and any
	// other error for a mismatch.
	Finish(ctx context.Context, whole io.Reader) error
}

var (
	// ErrCorrupt is what every read of an object that failed its
	// whole-object check returns, wrapped with the mismatch.
	ErrCorrupt = errors.New("content does not match the store's checksum")
	// ErrUnverifiable: the store's checksum could not be compared after
	// all (gone, changed version, bytes no longer cached in order).
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
	n     int64 // blocks in seen
	state VerifyState
	err   error // the mismatch, when failed
}

// verifier holds the per-object checks; its own lock, so that the hashing
// and the store round trip never hold the cache's.
type verifier struct {
	v        Verifier
	mu       sync.Mutex
	objs     map[objKey]*objVerify
	passes   map[objKey]bool // background passes over complete disk objects
	failures []ObjectID      // in the order they failed
	// anyFailed lets every read skip the lock while nothing failed.
	anyFailed atomic.Bool
	counters  struct{ verified, unverified, failed int64 }
}

func newVerifier(v Verifier) *verifier {
	return &verifier{v: v, objs: map[objKey]*objVerify{}, passes: map[objKey]bool{}}
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

// verifyBlock records that block index of id was loaded with bytes p. When
// it is the object's last, the object is checked before the caller
// publishes the block: a mismatch is returned (wrapping ErrCorrupt), and the
// object's cached blocks are dropped, so that the read that completes a
// damaged object fails, and every read after it. whole opens the object's
// bytes in order, for ordered checks.
func (c *Cache) verifyBlock(id ObjectID, index int64, p []byte, whole func() (io.Reader, func())) error {
	return c.checkBlock(id, index, p, whole, true)
}

// checkBlock is verifyBlock; drop is false for a caller that pins the
// object on disk, and drops it itself once it has let go.
func (c *Cache) checkBlock(id ObjectID, index int64, p []byte, whole func() (io.Reader, func()), drop bool) error {
	vr := c.verify
	if vr == nil {
		return nil
	}
	vr.mu.Lock()
	ov := vr.stateLocked(id)
	if ov.state != VerifyPending || ov.seen.Has(index) {
		err := ov.err
		vr.mu.Unlock()
		return err
	}
	ov.seen.add(index)
	check := ov.check
	vr.mu.Unlock()

	if !check.Ordered() {
		check.Block(index, p)
	}

	vr.mu.Lock()
	ov.n++
	last := ov.n == (id.Size+c.opts.BlockSize-1)/c.opts.BlockSize
	vr.mu.Unlock()
	if !last {
		return nil
	}
	var err error
	if check.Ordered() {
		r, done := whole()
		err = check.Finish(c.ctx, r)
		done()
	} else {
		err = check.Finish(c.ctx, nil)
	}
	vr.mu.Lock()
	ov.check, ov.seen = nil, BlockSet{} // settled: neither is needed again
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
	vr.mu.Unlock()
	if err == nil && ov.state == Verified {
		c.rememberVerified(id)
	}
	if err != nil {
		c.opts.Logger.Error("object does not match the store's checksum: its cached blocks are dropped and reads of it fail",
			"file", id.Name, "err", err)
		if !drop {
			return err
		}
		if derr := c.DropObject(id); derr != nil {
			c.opts.Logger.Error("could not drop the blocks of a damaged object", "file", id.Name, "err", derr)
		}
	}
	return err
}

// orderedReader reads id's blocks in order for an ordered check: block
// index from p, the others from RAM (waiting for one being finished) or
// the disk tier. A block found in neither makes the check ErrUnverifiable;
// nothing is fetched again.
func (c *Cache) orderedReader(id ObjectID, index int64, p []byte) func() (io.Reader, func()) {
	return func() (io.Reader, func()) {
		pr, pw := io.Pipe()
		go func() {
			buf := make([]byte, c.opts.BlockSize)
			n := (id.Size + c.opts.BlockSize - 1) / c.opts.BlockSize
			for i := int64(0); i < n; i++ {
				q := p
				if i != index {
					q = buf[:min(c.opts.BlockSize, id.Size-i*c.opts.BlockSize)]
					if !c.peek(id, i, q) && (c.disk == nil || !c.disk.get(id, i, q)) {
						pw.CloseWithError(fmt.Errorf("%w: block %d is no longer cached", ErrUnverifiable, i))
						return
					}
				}
				if _, err := pw.Write(q); err != nil {
					return
				}
			}
			pw.Close()
		}()
		return pr, func() { pr.Close() }
	}
}

// peek copies block index of id into q if it is in RAM, waiting for a load
// in flight but starting none.
func (c *Cache) peek(id ObjectID, index int64, q []byte) bool {
	c.mu.Lock()
	b, ok := c.blocks[key{id.Source, id.Name, id.Version, index}]
	if !ok || b.state == stateQueued {
		c.mu.Unlock()
		return false
	}
	b.refs++
	c.mu.Unlock()
	defer c.release(b)
	if c.wait(c.ctx, b) != nil {
		return false
	}
	return copy(q, b.data) == len(q)
}

// verifyFile runs the check of a complete, block-verified disk object from
// its data file, for the blocks no load has shown it yet. It reports
// whether the object may be handed to the kernel.
func (c *Cache) verifyFile(id ObjectID, f io.ReaderAt) bool {
	bs := c.opts.BlockSize
	buf := make([]byte, bs)
	whole := func() (io.Reader, func()) { return io.NewSectionReader(f, 0, id.Size), func() {} }
	for i := int64(0); i*bs < id.Size; i++ {
		if st, _ := c.Object(id).Verification(); st != VerifyPending || c.ctx.Err() != nil {
			break
		}
		p := buf[:min(bs, id.Size-i*bs)]
		if n, _ := f.ReadAt(p, i*bs); n != len(p) {
			return false
		}
		if err := c.checkBlock(id, i, p, whole, false); err != nil {
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
	old, err := os.ReadFile(filepath.Join(c.disk.root, objectDirID(id, c.opts.BlockSize), storeMarkName))
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
