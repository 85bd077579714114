package blockcache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Backing is an object's disk-cache data file, complete and verified,
// which a reader may hand to the kernel (FUSE passthrough). While any
// Backing of an object is open, no process sharing the cache directory
// evicts that object's blocks, since the kernel reads the file unchecked.
type Backing struct {
	File *os.File
	pin  *os.File // holds a shared flock on the object's pin file
}

// Close releases the file and the pin.
func (b *Backing) Close() error {
	b.pin.Close() // closing drops the flock
	return b.File.Close()
}

// PassedThrough tells the cache that the object's readers now read its
// data file through the kernel (FUSE passthrough). Its blocks in RAM that
// no reader has read yet never will be: a plan that ran ahead of the
// loader filled them, and the file they were written to serves the reader
// instead. So they stop counting against the bound on prefetch ahead of
// readers, where they would hold back other files' prefetches for good,
// and their buffers are the first to be reused, before fresh memory. The
// prefetch did its work, so their bytes count as used.
func (o *Object) PassedThrough() {
	c := o.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, b := range c.blocks {
		if k.source != o.id.Source || k.name != o.id.Name || k.version != o.id.Version || b.state != stateReady || !b.unread {
			continue
		}
		b.unread = false
		c.counters.prefetchUsed.Add(b.size)
		c.settleAhead(b)
		if b.consumed == nil {
			b.consumed = c.consumed.PushBack(b) // reused before any block a reader consumed
			b.served = nil
		}
	}
}

// Backing returns the object's data file when every block is on disk and
// the whole file was verified since it last changed, or false. It never
// blocks on verification: when the file needs it, a background pass is
// started (reading the whole object once) so that a later open gets it.
func (o *Object) Backing() (*Backing, bool) {
	return o.backing(false)
}

// VerifiedBacking is Backing that verifies the file first if it must.
func (o *Object) VerifiedBacking() (*Backing, bool) {
	return o.backing(true)
}

// CompleteOnDisk reports whether every block of the object is in the disk
// tier (by its records; contents are verified when read), and it has not
// failed its store's check.
func (o *Object) CompleteOnDisk() bool {
	t := o.c.disk
	if t == nil || o.c.failed(o.id) != nil {
		return false
	}
	obj, err := t.pin(o.id)
	if err != nil {
		return false
	}
	defer t.unpin(obj)
	return allRecorded(obj)
}

func (o *Object) backing(wait bool) (*Backing, bool) {
	t := o.c.disk
	if t == nil || o.id.Size == 0 {
		return nil, false
	}
	obj, err := t.pin(o.id)
	if err != nil {
		return nil, false
	}
	defer t.unpin(obj)
	if !allRecorded(obj) {
		return nil, false
	}
	if o.c.failed(o.id) != nil {
		return nil, false
	}
	b, fresh, ok := t.openBacking(obj, wait)
	if ok {
		// The kernel reads what it is handed unchecked: only an object
		// that passed its store's check, or that has none, goes.
		if o.c.storeChecked(o.id, b.File, wait) {
			return b, true
		}
		b.Close()
		if o.c.failed(o.id) != nil {
			// Dropped only now: the pin held above keeps every process,
			// this one included, from evicting the object.
			if err := o.c.DropObject(o.id); err != nil {
				o.c.opts.Logger.Error("could not drop the blocks of a damaged object", "file", o.id.Name, "err", err)
			}
		}
		return nil, false
	}
	if wait || !fresh {
		return b, ok
	}
	// Complete but not verified since it last changed.
	t.mu.Lock()
	t.verifyInBackground(obj)
	t.mu.Unlock()
	return nil, false
}

// storeChecked reports whether a complete object on disk passed its
// store's check. A pending check is run from the file: now when wait is
// set, else in the background, once at a time, for a later open.
func (c *Cache) storeChecked(id ObjectID, f *os.File, wait bool) bool {
	st, _ := c.Object(id).Verification()
	switch {
	case st == Verified || st == Unverified:
		return true
	case st == VerifyFailed:
		return false
	case c.markedVerified(id, f):
		return true
	case wait:
		return c.verifyFile(id, f)
	}
	k := objKey{id.Source, id.Name, id.Version}
	c.verify.mu.Lock()
	defer c.verify.mu.Unlock()
	if c.verify.passes[k] || c.ctx.Err() != nil {
		return false
	}
	c.verify.passes[k] = true
	c.verifyBG.Add(1)
	go func() {
		defer c.verifyBG.Done()
		if b, ok := c.Object(id).backing(true); ok {
			b.Close()
		}
		c.verify.mu.Lock()
		delete(c.verify.passes, k)
		c.verify.mu.Unlock()
	}()
	return false
}

// verifyInBackground verifies a complete object and stamps it, once at a
// time per object, so that later opens can pass it through. Called with
// t.mu held.
func (t *diskTier) verifyInBackground(obj *diskObject) {
	if _, busy := t.verifying[obj.id]; busy || t.closed {
		return
	}
	done := make(chan struct{})
	t.verifying[obj.id] = done
	obj.busy++
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		if b, _, ok := t.openBacking(obj, true); ok {
			b.Close()
		}
		t.mu.Lock()
		delete(t.verifying, obj.id)
		t.done(obj)
		t.mu.Unlock()
		close(done)
	}()
}

// openBacking pins the object and opens its data file if it verifies:
// from the stamp alone, or by reading it all when verify is set. fresh
// reports whether verification is what was missing.
func (t *diskTier) openBacking(obj *diskObject, verify bool) (b *Backing, fresh bool, ok bool) {
	dir := filepath.Join(t.root, obj.id)
	pin, err := openFile(filepath.Join(dir, "pin"), os.O_CREATE|os.O_RDONLY, filePerm)
	if err != nil {
		return nil, false, false
	}
	// Pin first, then check: an eviction that got in before us shows up
	// as a missing block below, and none can start after.
	if err := syscall.Flock(int(pin.Fd()), syscall.LOCK_SH); err != nil {
		pin.Close()
		return nil, false, false
	}
	data, err := openFile(filepath.Join(dir, "data"), os.O_RDONLY, 0)
	if err != nil {
		pin.Close()
		return nil, false, false
	}
	if t.verifiedWhole(obj, dir, data, verify) {
		return &Backing{File: data, pin: pin}, false, true
	}
	data.Close()
	pin.Close()
	return nil, !verify, false
}

// allRecorded reports whether every block has a record, reading them in
// bounded chunks and stopping at the first one missing.
func allRecorded(o *diskObject) bool {
	all := true
	err := scanRecords(o, false, func(_ int64, _ blockSum, ok bool) bool {
		all = ok
		return ok
	})
	return err == nil && all
}

func sameFile(a, b *os.File) bool {
	var sa, sb syscall.Stat_t
	return syscall.Fstat(int(a.Fd()), &sa) == nil && syscall.Fstat(int(b.Fd()), &sb) == nil &&
		sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func stampOf(f *os.File) (string, bool) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return "", false
	}
	return fmt.Sprintf("%d %d %d.%09d", st.Ino, st.Size, st.Ctim.Sec, st.Ctim.Nsec), true
}

// verifiedWhole reports whether every block is present and matches its
// record: by the verification stamp, or, when verify is set, by reading
// the file and then refreshing the stamp.
func (t *diskTier) verifiedWhole(o *diskObject, dir string, data *os.File, verify bool) bool {
	stamp, ok := stampOf(data)
	if !ok {
		return false
	}
	if !allRecorded(o) {
		return false
	}
	if seen := o.verified.Load(); seen != nil && *seen == stamp {
		return true
	}
	stampPath := filepath.Join(dir, "verified")
	if old, err := readMark(stampPath, maxMark); err == nil && strings.TrimSpace(string(old)) == stamp {
		o.verified.Store(&stamp)
		return true
	}
	if !verify {
		return false
	}
	// Reading a whole object can take minutes: it stops as soon as the
	// tier closes, so a shutdown never waits for it. It reads around the
	// page cache where it can: right after the object's last write-back,
	// a buffered read-back cost the mount as much CPU as the fetch (3 of
	// 13 CPU-s reading a 1 GiB model cold on the 2-core VM of
	// docs/benchmarks.md), and passthrough readers fill the cache anyway.
	buf, err := syscall.Mmap(-1, 0, int(o.hdr.BlockSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer syscall.Munmap(buf)
	file := &diskObject{data: data, direct: openDirect(data.Name())}
	if file.direct != nil && !sameFile(data, file.direct.f) {
		file.direct.close() // replaced meanwhile: read what was opened
		file.direct = nil
	}
	defer file.direct.close()
	good := true
	err = scanRecords(o, false, func(i int64, sum blockSum, ok bool) bool {
		if t.verifyHook != nil {
			t.verifyHook(t.ctx, i)
		}
		p := buf[:o.blockLen(i)]
		if !ok || t.ctx.Err() != nil {
			good = false
			return false
		}
		n, _, _ := file.readBlock(p, i*o.hdr.BlockSize)
		good = n == len(p) && sum.matches(p)
		return good
	})
	if err != nil || !good {
		return false
	}
	// A change during the scan changes the ctime: then the stamp is stale.
	if now, ok := stampOf(data); !ok || now != stamp {
		return false
	}
	tmp := stampPath + ".tmp"
	if os.WriteFile(tmp, []byte(stamp+"\n"), filePerm) == nil {
		os.Rename(tmp, stampPath)
	}
	o.verified.Store(&stamp)
	return true
}

// evictionLock takes the object's pin exclusively, without waiting: it
// fails while a Backing of the object is open in any process. Held while
// blocks are dropped, it also stops a Backing from being verified halfway.
func (t *diskTier) evictionLock(o *diskObject) (*os.File, bool) {
	f, err := openFile(filepath.Join(t.root, o.id, "pin"), os.O_CREATE|os.O_RDONLY, filePerm)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// notStored is Fill's error for a block the disk tier did not take.
func notStored(id ObjectID, index int64) error {
	return fmt.Errorf("block %d of %s: the disk cache is full or failing", index, id.Name)
}

// Fill makes sure block index of the object is on disk, verified, without
// keeping it in RAM: the warm-up path, which must not evict what readers
// use. It reports whether the block had to be fetched.
func (c *Cache) Fill(ctx context.Context, id ObjectID, index int64) (fetched bool, err error) {
	if c.disk == nil {
		return false, fmt.Errorf("fill %s: the cache has no disk tier", id.Name)
	}
	off := index * c.opts.BlockSize
	if index < 0 || off >= id.Size {
		return false, fmt.Errorf("fill %s: block %d is past the end", id.Name, index)
	}
	if err := c.failed(id); err != nil {
		return false, err // its blocks stay out of the cache
	}
	buf := c.fillBuf.Get().(*[]byte)
	defer c.fillBuf.Put(buf)
	p := (*buf)[:min(c.opts.BlockSize, id.Size-off)]
	if c.disk.get(id, index, p) {
		return false, c.verifyBlock(id, index, p)
	}
	c.counters.loads.Add(1)
	oc := c.countersFor(id)
	oc.loads.Add(1)
	if err := c.loader.LoadBlock(ctx, id, off, p); err != nil {
		c.counters.loadErrors.Add(1)
		return true, fmt.Errorf("block %d of %s: %w", index, id.Name, err)
	}
	c.counters.bytesLoaded.Add(int64(len(p)))
	oc.fetched.Add(int64(len(p)))
	if c.checksAlone(id) {
		// A check that takes blocks alone never reads one back: show it
		// the block first, and the disk records the CRC it took, as a
		// load's write-back does.
		_, sum, err := c.checkBlock(id, index, p, false, true)
		if err != nil {
			return true, err
		}
		if !c.writeBack(id, index, p, sum) {
			if err := c.failed(id); err != nil {
				return true, err
			}
			return true, notStored(id, index)
		}
		return true, nil
	}
	// An ordered check may read the block back from disk: write it first.
	if stored, _ := c.disk.put(id, index, p, xxSum(p)); !stored {
		return true, notStored(id, index)
	}
	if err := c.verifyBlock(id, index, p); err != nil {
		return true, err
	}
	// Another Fill may have found the object damaged while this block
	// was written.
	if err := c.failed(id); err != nil {
		if derr := c.disk.dropObject(id); derr != nil {
			c.opts.Logger.Error("could not drop the blocks of a damaged object", "file", id.Name, "err", derr)
		}
		return true, err
	}
	return true, nil
}

// DropObject removes every cached block of one object version from RAM's
// index and from disk, e.g. after its content failed a whole-object check.
func (c *Cache) DropObject(id ObjectID) error {
	c.mu.Lock()
	for k, b := range c.blocks {
		if k.source != id.Source || k.name != id.Name || k.version != id.Version || b.state != stateReady {
			continue
		}
		c.lru.Remove(b.elem)
		if b.consumed != nil {
			c.consumed.Remove(b.consumed)
			b.consumed = nil
		}
		delete(c.blocks, k)
		c.settleAhead(b)
		if b.refs == 0 {
			c.recycle(b.data)
			b.data = nil
		} else {
			b.doomed = true // readers still copy out of it
		}
	}
	c.mu.Unlock()
	if c.disk == nil {
		return nil
	}
	return c.disk.dropObject(id)
}
