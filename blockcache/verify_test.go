package blockcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// sumVerifier checks objects against the sums it was given, by name: an
// order-free sum of per-block CRCs, or a SHA-256 of the bytes in order.
type sumVerifier struct {
	ordered bool
	want    map[string][]byte // by name; absent: no checksum
}

func (v *sumVerifier) Check(id ObjectID) ObjectCheck {
	want, ok := v.want[id.Name]
	if !ok {
		return nil
	}
	return &sumCheck{ordered: v.ordered, want: want, crcs: map[int64]uint32{}, sha: sha256.New()}
}

type sumCheck struct {
	ordered bool
	want    []byte
	mu      sync.Mutex
	crcs    map[int64]uint32
	sha     hash.Hash
	next    int64 // ordered: the block Block must see next
	busy    bool  // ordered: a Block call is under way
}

func (c *sumCheck) Ordered() bool { return c.ordered }

func (c *sumCheck) Block(_ context.Context, i int64, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ordered {
		c.crcs[i] = crc32.ChecksumIEEE(p)
		return nil
	}
	// The contract under test: in order, one call at a time.
	if i != c.next || c.busy {
		return fmt.Errorf("ordered check shown block %d while expecting %d (busy %v)", i, c.next, c.busy)
	}
	c.busy = true
	c.mu.Unlock()
	c.sha.Write(p)
	c.mu.Lock()
	c.busy = false
	c.next++
	return nil
}

func (c *sumCheck) Finish(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := crcList(c.crcs)
	if c.ordered {
		got = c.sha.Sum(nil)
	}
	if !bytes.Equal(got, c.want) {
		return fmt.Errorf("sum %x, want %x", got, c.want)
	}
	return nil
}

func crcList(crcs map[int64]uint32) []byte {
	var b []byte
	for i := int64(0); i < int64(len(crcs)); i++ {
		b = fmt.Appendf(b, "%08x", crcs[i])
	}
	return b
}

func blockCRCs(data []byte, bs int) []byte {
	m := map[int64]uint32{}
	for i := 0; i*bs < len(data); i++ {
		m[int64(i)] = crc32.ChecksumIEEE(data[i*bs : min(len(data), (i+1)*bs)])
	}
	return crcList(m)
}

// A reader that reads a damaged object to its end never gets a clean EOF:
// the read that completes it fails, and every read after; the intact object
// next to it reads clean, and one without a checksum is Unverified.
func TestVerifyOnCompletion(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		for _, disk := range []bool{false, true} {
			t.Run(fmt.Sprintf("ordered=%v/disk=%v", ordered, disk), func(t *testing.T) {
				const bs = 64 << 10
				good, bad, bare := randomBytes(5*bs+100, 1), randomBytes(4*bs, 2), randomBytes(bs+1, 3)
				sum := func(b []byte) []byte {
					if ordered {
						s := sha256.Sum256(b)
						return s[:]
					}
					return blockCRCs(b, bs)
				}
				v := &sumVerifier{ordered: ordered, want: map[string][]byte{"good": sum(good), "bad": sum(bad)}}
				damaged := bytes.Clone(bad)
				damaged[3*bs+7] ^= 1
				l := &memLoader{data: map[string][]byte{"goodv": good, "badv": damaged, "barev": bare}}
				opts := Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 4, Verifier: v}
				if disk {
					opts.Disk = &DiskOptions{Dir: t.TempDir(), MaxBytes: 1 << 30}
				}
				c := New(opts, l)
				defer c.Close()
				id := func(name string, data []byte) ObjectID {
					return ObjectID{Source: "s", Name: name, Version: "v", Size: int64(len(data))}
				}
				readAll := func(name string, data []byte) error {
					o := c.Object(id(name, data))
					buf := make([]byte, 10000)
					for off := int64(0); ; off += 10000 {
						_, err := o.ReadAt(context.Background(), buf, off)
						if err == io.EOF {
							return nil
						}
						if err != nil {
							return err
						}
					}
				}
				if err := readAll("good", good); err != nil {
					t.Fatalf("intact object: %v", err)
				}
				if err := readAll("bad", bad); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("damaged object read to its end: %v, want ErrCorrupt", err)
				}
				for _, off := range []int64{0, 3 * bs, int64(len(bad)) - 1} {
					if _, err := c.Object(id("bad", bad)).ReadAt(context.Background(), make([]byte, 1), off); !errors.Is(err, ErrCorrupt) {
						t.Fatalf("read at %d after the failure: %v, want ErrCorrupt", off, err)
					}
				}
				if err := readAll("bare", bare); err != nil {
					t.Fatalf("object without a checksum: %v", err)
				}
				st := c.ObjectStats([]ObjectID{id("good", good), id("bad", bad), id("bare", bare)})
				if st[0].Verify != Verified || st[1].Verify != VerifyFailed || st[2].Verify != Unverified {
					t.Fatalf("states %v %v %v, want verified, failed, unverified", st[0].Verify, st[1].Verify, st[2].Verify)
				}
				if st[1].MemBytes != 0 || st[1].DiskBytes != 0 {
					t.Fatalf("the damaged object still has %d bytes in RAM, %d on disk", st[1].MemBytes, st[1].DiskBytes)
				}
				if s := c.Stats(); s.VerifiedObjects != 1 || s.VerifyFailures != 1 || s.UnverifiedObjects != 1 {
					t.Fatalf("stats: %d verified, %d failed, %d unverified", s.VerifiedObjects, s.VerifyFailures, s.UnverifiedObjects)
				}
				if _, ok := c.Object(id("bad", bad)).VerifiedBacking(); ok {
					t.Fatal("a damaged object was handed out for passthrough")
				}
			})
		}
	}
}

// Fill (warm) verifies too: the Fill that completes a damaged object fails,
// its blocks are dropped, and a fresh cache over the same disk verifies a
// complete object from its file before passing it through.
func TestVerifyFillAndBacking(t *testing.T) {
	const bs = 64 << 10
	dir := t.TempDir()
	good, bad := randomBytes(3*bs+5, 4), randomBytes(2*bs, 5)
	damaged := bytes.Clone(bad)
	damaged[10] ^= 0x80
	for _, ordered := range []bool{false, true} {
		sum := func(b []byte) []byte {
			if ordered {
				s := sha256.Sum256(b)
				return s[:]
			}
			return blockCRCs(b, bs)
		}
		v := &sumVerifier{ordered: ordered, want: map[string][]byte{"good": sum(good), "bad": sum(bad)}}
		l := &memLoader{data: map[string][]byte{"goodv": good, "badv": damaged}}
		opts := Options{BlockSize: bs, MemBytes: 16 * bs, Workers: 2, Verifier: v, Disk: &DiskOptions{Dir: dir, MaxBytes: 1 << 30}}
		c := New(opts, l)
		gid := ObjectID{Source: "s", Name: "good", Version: "v", Size: int64(len(good))}
		bid := ObjectID{Source: "s", Name: "bad", Version: "v", Size: int64(len(bad))}
		for i := int64(0); i*bs < gid.Size; i++ {
			if _, err := c.Fill(context.Background(), gid, i); err != nil {
				t.Fatal(err)
			}
		}
		var ferr error
		for i := int64(0); i*bs < bid.Size; i++ {
			if _, err := c.Fill(context.Background(), bid, i); err != nil {
				ferr = err
			}
		}
		if !errors.Is(ferr, ErrCorrupt) || c.Object(bid).CompleteOnDisk() {
			t.Fatalf("fill of a damaged object: %v, complete on disk %v", ferr, c.Object(bid).CompleteOnDisk())
		}
		c.Close()

		// A fresh cache: the good object is complete on disk and marked
		// as having passed, so it is handed out without a load.
		loads := len(l.loadOrder())
		c = New(opts, l)
		b, ok := c.Object(gid).Backing()
		if !ok {
			t.Fatal("a complete object that passed its check was not handed out")
		}
		b.Close()
		if st, _ := c.Object(gid).Verification(); st != Verified || len(l.loadOrder()) != loads {
			t.Fatalf("from the mark: %v, %d loads", st, len(l.loadOrder())-loads)
		}
		c.Close()

		// Without the mark, it is checked from its file first; and when
		// the store's checksum disagrees, it is dropped instead.
		gdir := filepath.Join(dir, diskVersionDir, objectDirID(gid, bs))
		if err := os.Remove(filepath.Join(gdir, storeMarkName)); err != nil {
			t.Fatal(err)
		}
		c = New(opts, l)
		if b, ok := c.Object(gid).VerifiedBacking(); !ok {
			t.Fatal("a complete, intact object was not handed out")
		} else {
			b.Close()
		}
		c.Close()
		os.Remove(filepath.Join(gdir, storeMarkName))
		v.want["good"] = sum(bad)
		c = New(opts, l)
		if _, ok := c.Object(gid).VerifiedBacking(); ok {
			t.Fatal("an object that fails its check was handed out")
		}
		if st, _ := c.Object(gid).Verification(); st != VerifyFailed || c.Object(gid).CompleteOnDisk() {
			t.Fatalf("after a failed file pass: %v, complete on disk %v", st, c.Object(gid).CompleteOnDisk())
		}
		c.Close()
		dir = t.TempDir()
	}
}

// Blocks served whole are reused first, except those an ordered check
// (SHA, MD5) still has to read back: without a disk tier they are only
// in RAM, and the check must not fail for want of them.
func TestOrderedCheckKeepsConsumedBlocks(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(6*bs+5, 41)
	sum := sha256.Sum256(data)
	id := ObjectID{Name: "sha", Version: "v", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{"shav": data}}
	c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 2,
		Verifier: &sumVerifier{ordered: true, want: map[string][]byte{"sha": sum[:]}}}, l)
	defer c.Close()
	obj := c.Object(id)
	for off := int64(0); off < id.Size; off += bs {
		if _, err := obj.ReadAt(context.Background(), make([]byte, bs), off); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
	}
	if st, err := obj.Verification(); st != Verified {
		t.Fatalf("verification %v (%v), want verified", st, err)
	}
	if s := c.Stats(); s.Loads != 7 {
		t.Fatalf("%d loads, want 7", s.Loads)
	}
}

// An ordered check is fed as the object loads, so a RAM tier much smaller
// than the object still verifies it from one sequential read, with every
// block fetched once; and a damaged one fails the read that completes it.
func TestOrderedCheckSmallRAM(t *testing.T) {
	const bs = 64 << 10
	good, bad := randomBytes(20*bs+9, 51), randomBytes(20*bs, 52)
	damaged := bytes.Clone(bad)
	damaged[17*bs+3] ^= 4
	gs, bsum := sha256.Sum256(good), sha256.Sum256(bad)
	l := &memLoader{data: map[string][]byte{"goodv": good, "badv": damaged}}
	c := New(Options{BlockSize: bs, MemBytes: 4 * bs, Workers: 2,
		Verifier: &sumVerifier{ordered: true, want: map[string][]byte{"good": gs[:], "bad": bsum[:]}}}, l)
	defer c.Close()
	read := func(name string, size int) error {
		id := ObjectID{Source: "s", Name: name, Version: "v", Size: int64(size)}
		o := c.Object(id)
		buf := make([]byte, 4096)
		for off := int64(0); ; off += int64(len(buf)) {
			if _, err := o.ReadAt(context.Background(), buf, off); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			if off%bs == 0 {
				// The hash keeps up with a block's worth of reads,
				// whatever the scheduler does meanwhile.
				waitHashed(t, c, id, off/bs)
			}
		}
	}
	if err := read("good", len(good)); err != nil {
		t.Fatal(err)
	}
	gid := ObjectID{Source: "s", Name: "good", Version: "v", Size: int64(len(good))}
	if st, err := c.Object(gid).Verification(); st != Verified {
		t.Fatalf("verification %v (%v), want verified", st, err)
	}
	if s := c.Stats(); s.Loads != 21 || s.MemBytes > 4*bs+2*bs {
		t.Fatalf("%d loads (want 21), %d bytes of RAM", s.Loads, s.MemBytes)
	}
	if err := read("bad", len(bad)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged object read to its end: %v, want ErrCorrupt", err)
	}
}

// waitHashed waits until id's ordered check has hashed its first n blocks
// and let go, or has settled.
func waitHashed(t *testing.T, c *Cache, id ObjectID, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.verify.mu.Lock()
		ov := c.verify.stateLocked(id)
		done := ov.state != VerifyPending || (ov.next >= n && !ov.busy)
		c.verify.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ordered check of %s did not reach block %d", id.Name, n)
		}
		runtime.Gosched()
	}
}

// flakyLoader serves other bytes for one block from its second load on.
type flakyLoader struct {
	*memLoader
	off   int64 // the block that changes
	mu    sync.Mutex
	loads int
}

func (l *flakyLoader) LoadBlock(ctx context.Context, id ObjectID, off int64, p []byte) error {
	if err := l.memLoader.LoadBlock(ctx, id, off, p); err != nil || off != l.off {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loads++; l.loads > 1 {
		p[1] ^= 0x10
	}
	return nil
}

// Blocks read ahead of the ordered hash and dropped from RAM before it
// reached them are fetched again, and must be the very bytes served the
// first time: else the object fails, even when the store's checksum
// matches what came the second time.
func TestOrderedCheckRefetchesDroppedBlocks(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(12*bs+5, 61)
	id := ObjectID{Source: "s", Name: "m", Version: "v", Size: int64(len(data))}
	// Each read waits for the hash to take what it can, so that what RAM
	// drops does not depend on how the feeding goroutine is scheduled.
	readBlocks := func(c *Cache, blocks ...int64) error {
		for _, i := range blocks {
			_, err := c.Object(id).ReadAt(context.Background(), make([]byte, bs), i*bs)
			if err != nil && err != io.EOF {
				return fmt.Errorf("block %d: %w", i, err)
			}
			if i < 8 || i > 10 {
				waitHashed(t, c, id, i+1)
			}
		}
		return nil
	}
	// Blocks 8-10 first, then 0-7 and the last, through a 2-block RAM
	// tier: 8 and 9 are pushed out before the hash reaches them (10 is
	// kept, as what the hash has done with goes first).
	order := []int64{8, 9, 10, 0, 1, 2, 3, 4, 5, 6, 7, 11, 12}

	t.Run("same bytes", func(t *testing.T) {
		sum := sha256.Sum256(data)
		l := &memLoader{data: map[string][]byte{"mv": data}}
		c := New(Options{BlockSize: bs, MemBytes: 2 * bs, Workers: 1,
			Verifier: &sumVerifier{ordered: true, want: map[string][]byte{"m": sum[:]}}}, l)
		defer c.Close()
		if err := readBlocks(c, order...); err != nil {
			t.Fatal(err)
		}
		if st, err := c.Object(id).Verification(); st != Verified {
			t.Fatalf("verification %v (%v), want verified", st, err)
		}
		// 13 blocks, and 8 and 9 again; 10 too when the hash still held
		// block 0 as reading 1 needed room, which the scheduling decides.
		loads := map[int64]int{}
		for _, off := range l.loadOrder() {
			loads[off/bs]++
		}
		if s := c.Stats(); s.Loads < 15 || s.Loads > 16 || loads[8] != 2 || loads[9] != 2 {
			t.Fatalf("%d loads, want 15 or 16, blocks 8 and 9 twice (%v)", s.Loads, l.loadOrder())
		}
	})

	t.Run("changed on the second fetch", func(t *testing.T) {
		second := bytes.Clone(data)
		second[9*bs+1] ^= 0x10
		sum := sha256.Sum256(second) // the store agrees with the second fetch
		l := &flakyLoader{memLoader: &memLoader{data: map[string][]byte{"mv": data}}, off: 9 * bs}
		c := New(Options{BlockSize: bs, MemBytes: 2 * bs, Workers: 1,
			Verifier: &sumVerifier{ordered: true, want: map[string][]byte{"m": sum[:]}}}, l)
		defer c.Close()
		err := readBlocks(c, order...)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("reading it all: %v, want ErrCorrupt", err)
		}
		st, verr := c.Object(id).Verification()
		if st != VerifyFailed || verr == nil || !strings.Contains(verr.Error(), "not the bytes first loaded") {
			t.Fatalf("verification %v (%v), want failed for a changed block", st, verr)
		}
	})
}

// Concurrent readers in scattered order, through a RAM tier a fraction of
// the object: the ordered check still sees every block once, in order, one
// at a time (sumCheck fails the object otherwise), and passes.
func TestOrderedCheckConcurrentScatteredReads(t *testing.T) {
	const bs = 32 << 10
	const blocks = 48
	data := randomBytes(blocks*bs-100, 71)
	sum := sha256.Sum256(data)
	id := ObjectID{Source: "s", Name: "m", Version: "v", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{"mv": data}}
	c := New(Options{BlockSize: bs, MemBytes: 6 * bs, Workers: 4,
		Verifier: &sumVerifier{ordered: true, want: map[string][]byte{"m": sum[:]}}}, l)
	defer c.Close()
	perm := rand.New(rand.NewPCG(7, 7)).Perm(blocks)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 4 {
		wg.Go(func() {
			buf := make([]byte, bs)
			for _, i := range perm[r*blocks/4 : (r+1)*blocks/4] {
				n, err := c.Object(id).ReadAt(context.Background(), buf, int64(i)*bs)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], data[i*bs:i*bs+n]) {
					errs <- fmt.Errorf("block %d: wrong bytes", i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st, err := c.Object(id).Verification(); st != Verified {
		t.Fatalf("verification %v (%v), want verified", st, err)
	}
}

// Fail fails an object for bytes found wrong outside the cache, whatever
// its check said: verified, unverified or still pending. Its blocks go,
// reads fail, and the counts move from the old state to failed.
func TestFailAfterAnyState(t *testing.T) {
	const bs = 64 << 10
	good, bare, pending := randomBytes(3*bs, 4), randomBytes(2*bs, 5), randomBytes(3*bs, 6)
	v := &sumVerifier{want: map[string][]byte{"good": blockCRCs(good, bs), "pending": blockCRCs(pending, bs)}}
	l := &memLoader{data: map[string][]byte{"goodv": good, "barev": bare, "pendingv": pending}}
	c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 4, Verifier: v, Disk: &DiskOptions{Dir: t.TempDir(), MaxBytes: 1 << 30}}, l)
	defer c.Close()
	id := func(name string, data []byte) ObjectID {
		return ObjectID{Source: "s", Name: name, Version: "v", Size: int64(len(data))}
	}
	for _, o := range []struct {
		name string
		data []byte
	}{{"good", good}, {"bare", bare}} {
		if _, err := c.Object(id(o.name, o.data)).ReadAt(context.Background(), make([]byte, len(o.data)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Object(id("pending", pending)).ReadAt(context.Background(), make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.VerifiedObjects != 1 || s.UnverifiedObjects != 1 {
		t.Fatalf("before: %d verified, %d unverified", s.VerifiedObjects, s.UnverifiedObjects)
	}
	for _, o := range []struct {
		name string
		data []byte
	}{{"good", good}, {"bare", bare}, {"pending", pending}} {
		obj := c.Object(id(o.name, o.data))
		if err := obj.Fail(errors.New("served bytes differ")); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Fail returned %v, want ErrCorrupt", o.name, err)
		}
		if st, _ := obj.Verification(); st != VerifyFailed {
			t.Errorf("%s: %v after Fail", o.name, st)
		}
		if _, err := obj.ReadAt(context.Background(), make([]byte, 1), 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: a read after Fail: %v", o.name, err)
		}
		if _, ok := obj.VerifiedBacking(); ok {
			t.Errorf("%s: handed out for passthrough after Fail", o.name)
		}
	}
	st := c.ObjectStats([]ObjectID{id("good", good), id("bare", bare)})
	if st[0].MemBytes != 0 || st[0].DiskBytes != 0 || st[1].MemBytes != 0 || st[1].DiskBytes != 0 {
		t.Errorf("failed objects keep bytes: %+v", st)
	}
	if s := c.Stats(); s.VerifiedObjects != 0 || s.UnverifiedObjects != 0 || s.VerifyFailures != 3 {
		t.Errorf("after: %d verified, %d unverified, %d failed; want 0, 0, 3", s.VerifiedObjects, s.UnverifiedObjects, s.VerifyFailures)
	}
}
