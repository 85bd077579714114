package blockcache

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/crc64nvme"
	"golang.org/x/sys/unix"
)

const testBS = 64 << 10

func newDiskCache(t *testing.T, dir string, l Loader, diskMax int64) *Cache {
	t.Helper()
	c := New(Options{BlockSize: testBS, MemBytes: 1 << 20, Workers: 4, Disk: &DiskOptions{Dir: dir, MaxBytes: diskMax}}, l)
	if c.disk == nil {
		t.Fatal("disk tier did not open")
	}
	return c
}

func readAll(t *testing.T, c *Cache, id ObjectID) []byte {
	t.Helper()
	p := make([]byte, id.Size)
	if n, err := c.Object(id).ReadAt(context.Background(), p, 0); n != len(p) || (err != nil && n != len(p)) {
		t.Fatalf("read %d of %d bytes: %v", n, len(p), err)
	}
	return p
}

// objectFiles returns the data and meta paths of the only cached object.
func objectFiles(t *testing.T, dir string) (data, meta string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, diskVersionDir))
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache dir holds %v (%v), want one object", entries, err)
	}
	d := filepath.Join(dir, diskVersionDir, entries[0].Name())
	return filepath.Join(d, "data"), filepath.Join(d, "meta")
}

func TestDiskTierPersistsAcrossCaches(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(10*testBS+123, 20)
	id := ObjectID{Name: "m/model.safetensors", Version: "e:1", Size: int64(len(data))}
	l1 := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
	c1 := newDiskCache(t, dir, l1, 1<<30)
	if got := readAll(t, c1, id); !bytes.Equal(got, data) {
		t.Fatal("first read: wrong bytes")
	}
	c1.Close() // waits for the write-backs
	if s := c1.Stats(); s.DiskWrites != 11 {
		t.Fatalf("disk writes = %d, want 11", s.DiskWrites)
	}

	l2 := &memLoader{data: l1.data}
	c2 := newDiskCache(t, dir, l2, 1<<30)
	defer c2.Close()
	if got := readAll(t, c2, id); !bytes.Equal(got, data) {
		t.Fatal("read from disk: wrong bytes")
	}
	if n := len(l2.loadOrder()); n != 0 {
		t.Fatalf("a new cache on the same dir loaded %d blocks remotely, want 0", n)
	}
	if s := c2.Stats(); s.DiskHits != 11 || s.DiskBytes != int64(len(data)) {
		t.Fatalf("disk hits %d, bytes %d; want 11, %d", s.DiskHits, s.DiskBytes, len(data))
	}
	// Another version of the same name never comes from these blocks.
	v2 := ObjectID{Name: id.Name, Version: "e:2", Size: id.Size}
	other := randomBytes(len(data), 21)
	l2.data[v2.Name+v2.Version] = other
	if got := readAll(t, c2, v2); !bytes.Equal(got, other) {
		t.Fatal("a new version was served from the old version's blocks")
	}
}

func TestDiskTierDetectsDamage(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(8*testBS, 22)
	id := ObjectID{Name: "w.bin", Version: "e:1", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
	c := newDiskCache(t, dir, l, 1<<30)
	readAll(t, c, id)
	c.Close()
	dataPath, metaPath := objectFiles(t, dir)

	// Flip a bit in block 1, zero block 3's bytes, garble block 5's record,
	// and leave a foreign file and directory in the cache.
	flipBits(t, dataPath, 1*testBS+100, 0x04)
	f, err := os.OpenFile(dataPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, testBS), 3*testBS)
	f.Close()
	m, err := os.OpenFile(metaPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteAt([]byte("garbage!garbage!"), metaHeaderSize+5*recordSize)
	m.Close()
	os.WriteFile(filepath.Join(dir, diskVersionDir, "stray-file"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(dir, diskVersionDir, "stray-dir"), 0o755)

	l2 := &memLoader{data: l.data}
	c2 := newDiskCache(t, dir, l2, 1<<30)
	if got := readAll(t, c2, id); !bytes.Equal(got, data) {
		t.Fatal("damaged cache served wrong bytes")
	}
	if got := l2.loadOrder(); len(got) != 3 {
		t.Fatalf("refetched blocks at %v, want the 3 damaged ones", got)
	}
	if s := c2.Stats(); s.DiskCorrupt != 2 {
		t.Fatalf("corrupt blocks counted %d, want 2 (the garbled record reads as absent)", s.DiskCorrupt)
	}
	c2.Close()

	// A truncated data file and a garbage header: nothing wrong is served.
	os.Truncate(dataPath, 2*testBS)
	l3 := &memLoader{data: l.data}
	c3 := newDiskCache(t, dir, l3, 1<<30)
	if got := readAll(t, c3, id); !bytes.Equal(got, data) {
		t.Fatal("truncated cache served wrong bytes")
	}
	if got := len(l3.loadOrder()); got != 6 {
		t.Fatalf("after truncation %d blocks were refetched, want 6", got)
	}
	c3.Close()
	os.WriteFile(metaPath, bytes.Repeat([]byte{0xff}, 5000), 0o644)
	l4 := &memLoader{data: l.data}
	c4 := newDiskCache(t, dir, l4, 1<<30)
	defer c4.Close()
	if got := readAll(t, c4, id); !bytes.Equal(got, data) {
		t.Fatal("cache with a garbage header served wrong bytes")
	}
	if got := len(l4.loadOrder()); got != 8 {
		t.Fatalf("with a garbage header %d blocks were refetched, want all 8", got)
	}
}

func TestDiskTierUnpublishedBlockIsNotServed(t *testing.T) {
	// A process killed between writing a block's data and its record
	// leaves bytes without a record: they must read as absent.
	dir := t.TempDir()
	data := randomBytes(4*testBS, 23)
	id := ObjectID{Name: "w.bin", Version: "e:1", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
	c := newDiskCache(t, dir, l, 1<<30)
	c.Object(id).ReadAt(context.Background(), make([]byte, 1), 0) // creates the object, fills block 0
	c.Close()
	dataPath, _ := objectFiles(t, dir)
	f, _ := os.OpenFile(dataPath, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{0xAB}, testBS), 2*testBS)
	f.Close()
	l2 := &memLoader{data: l.data}
	c2 := newDiskCache(t, dir, l2, 1<<30)
	defer c2.Close()
	if got := readAll(t, c2, id); !bytes.Equal(got, data) {
		t.Fatal("unpublished bytes were served")
	}
}

func TestDiskTierStaysWithinBudget(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(20*testBS, 24)
	id := ObjectID{Name: "w.bin", Version: "e:1", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
	const budget = 5 * testBS
	c := newDiskCache(t, dir, l, budget)
	defer c.Close()
	p := make([]byte, testBS)
	for i := range 20 {
		if _, err := c.Object(id).ReadAt(context.Background(), p, int64(i*testBS)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the write-back", func() bool { return c.Stats().DiskWrites == int64(i+1) })
		if s := c.Stats(); s.DiskBytes > budget {
			t.Fatalf("after block %d the disk tier holds %d bytes, budget %d", i, s.DiskBytes, budget)
		}
		dataPath, _ := objectFiles(t, dir)
		var st syscall.Stat_t
		syscall.Stat(dataPath, &st)
		if used := st.Blocks * 512; used > budget+testBS {
			t.Fatalf("after block %d the data file occupies %d bytes on disk, budget %d", i, used, budget)
		}
	}
	if s := c.Stats(); s.DiskEvictions != 15 {
		t.Fatalf("disk evictions = %d, want 15", s.DiskEvictions)
	}
}

func TestDiskTierSharedByConcurrentCaches(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(32*testBS, 25)
	id := ObjectID{Name: "w.bin", Version: "e:1", Size: int64(len(data))}
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
			c := New(Options{BlockSize: testBS, MemBytes: 4 * testBS, Workers: 2, Disk: &DiskOptions{Dir: dir, MaxBytes: 16 * testBS}}, l)
			defer c.Close()
			for round := range 3 {
				p := make([]byte, 3*testBS)
				for off := int64((i + round) % 4 * testBS); off < int64(len(data)); off += int64(len(p)) {
					n, _ := c.Object(id).ReadAt(context.Background(), p, off)
					if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
						t.Errorf("cache %d: wrong bytes at %d", i, off)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestUnusableDiskDirFallsBackToRAM(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(file, nil, 0o644)
	data := randomBytes(3*testBS, 26)
	id := ObjectID{Name: "w", Version: "v", Size: int64(len(data))}
	c := New(Options{BlockSize: testBS, Disk: &DiskOptions{Dir: file, MaxBytes: 1 << 20}}, &memLoader{data: map[string][]byte{"wv": data}})
	defer c.Close()
	if c.disk != nil {
		t.Fatal("disk tier opened on a plain file")
	}
	if got := readAll(t, c, id); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes without a disk tier")
	}
}

func TestBackingNeedsEveryBlockAndPinsTheObject(t *testing.T) {
	dir := t.TempDir()
	a := randomBytes(4*testBS, 30)
	b := randomBytes(4*testBS, 31)
	ida := ObjectID{Name: "a", Version: "1", Size: int64(len(a))}
	idb := ObjectID{Name: "b", Version: "1", Size: int64(len(b))}
	l := &memLoader{data: map[string][]byte{"a1": a, "b1": b}}
	c := newDiskCache(t, dir, l, 6*testBS)
	defer c.Close()
	p := make([]byte, testBS)
	c.Object(ida).ReadAt(context.Background(), p, 0)
	waitFor(t, "write-back", func() bool { return c.Stats().DiskWrites == 1 })
	if _, ok := c.Object(ida).VerifiedBacking(); ok {
		t.Fatal("Backing of a partly cached object")
	}
	readAll(t, c, ida)
	waitFor(t, "write-back", func() bool { return c.Stats().DiskWrites == 4 })
	back, ok := c.Object(ida).VerifiedBacking()
	if !ok {
		t.Fatal("no Backing for a fully cached object")
	}
	got := make([]byte, len(a))
	if _, err := back.File.ReadAt(got, 0); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("backing file holds other bytes (%v)", err)
	}
	// Filling b needs room; a is pinned, so the tier goes without rather
	// than punch holes in a file the kernel may be reading.
	readAll(t, c, idb)
	waitFor(t, "write-backs", func() bool { return c.Stats().DiskWrites >= 6 })
	again, ok := c.Object(ida).VerifiedBacking()
	if !ok {
		t.Fatal("a pinned object lost blocks to eviction")
	}
	again.Close()
	back.Close()
	// Unpinned, a can be evicted again, and then has no Backing.
	c.Object(idb).Prefetch(0, idb.Size)
	// A background verification pins an object while it reads it; let
	// those finish so the only pins are the test's.
	c.disk.bg.Wait()
	c.disk.mu.Lock()
	c.disk.makeRoom(6 * testBS)
	c.disk.mu.Unlock()
	if _, ok := c.Object(ida).VerifiedBacking(); ok {
		t.Fatal("Backing after a's blocks were evicted")
	}
}

func TestBackingRejectsCorruptFile(t *testing.T) {
	c, id, dataPath := cachedWhole(t, 32)
	flipBits(t, dataPath, testBS+7, 0xff)
	if _, ok := c.Object(id).VerifiedBacking(); ok {
		t.Fatal("Backing handed out a file with a flipped bit")
	}
}

// cachedWhole caches a 3-block object, made from seed, whole in a disk
// tier of its own, and returns the cache (closed when the test ends), the
// object and its data file.
func cachedWhole(t *testing.T, seed uint64) (*Cache, ObjectID, string) {
	t.Helper()
	dir := t.TempDir()
	a := randomBytes(3*testBS, seed)
	id := ObjectID{Name: "a", Version: "1", Size: int64(len(a))}
	c := newDiskCache(t, dir, &memLoader{data: map[string][]byte{"a1": a}}, 1<<20)
	t.Cleanup(c.Close)
	readAll(t, c, id)
	waitFor(t, "write-backs", func() bool { return c.Stats().DiskWrites == 3 })
	dataPath, _ := objectFiles(t, dir)
	return c, id, dataPath
}

// An object once handed out is checked again after its file changed:
// what this process remembers of a verified object is keyed by the data
// file's stamp (inode, size, ctime), like the mark on disk.
func TestBackingAfterAChangeChecksAgain(t *testing.T) {
	c, id, dataPath := cachedWhole(t, 33)
	for range 2 { // the second from what this process remembers
		b, ok := c.Object(id).VerifiedBacking()
		if !ok {
			t.Fatal("no backing for a complete, intact object")
		}
		b.Close()
	}
	flipBits(t, dataPath, 2*testBS+3, 0xff)
	if b, ok := c.Object(id).VerifiedBacking(); ok {
		b.Close()
		t.Fatal("Backing handed out a file changed since it was verified")
	}
}

// TestDropWaitsForVerification: dropping an object right after its last
// block landed (which starts its background verification) succeeds, and
// leaves nothing on disk.
func TestDropWaitsForVerification(t *testing.T) {
	dir := t.TempDir()
	l := &memLoader{data: map[string][]byte{}}
	var ids []ObjectID
	for i := range 20 {
		data := randomBytes(8*testBS, uint64(100+i))
		id := ObjectID{Name: "m/x.bin", Version: fmt.Sprint("e:", i), Size: int64(len(data))}
		l.data[id.Name+id.Version] = data
		ids = append(ids, id)
	}
	c := newDiskCache(t, dir, l, 1<<30)
	defer c.Close()
	for i, id := range ids {
		for b := range int64(8) {
			if _, err := c.Fill(context.Background(), id, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.DropObject(id); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, diskVersionDir))
	if err != nil || len(entries) != 0 {
		t.Fatalf("after dropping every object the cache dir holds %d objects (%v)", len(entries), err)
	}
}

// Blocks go to the data file with direct I/O where the file system allows
// it; a buffered reader of the file (passthrough, verification, another
// process) must still see every byte, the unaligned tail of the last
// block included, also over pages it had cached before the write.
func TestDirectWritesReachBufferedReaders(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(3*testBS+777, 31)
	id := ObjectID{Name: "m/direct.bin", Version: "e:1", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
	c := newDiskCache(t, dir, l, 1<<30)
	defer c.Close()
	// Create the object with block 0, then cache the file's pages
	// (zeros, for the holes) through a buffered reader.
	if _, err := c.Object(id).ReadAt(context.Background(), make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "block 0 on disk", func() bool { return c.Stats().DiskWrites == 1 })
	path, _ := objectFiles(t, dir)
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c, id); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes through the cache")
	}
	waitFor(t, "every block on disk", func() bool { return c.Stats().DiskWrites == 4 })
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a buffered read of the data file differs from the object (%v)", err)
	}
	c.disk.mu.Lock()
	var direct *directFile
	for _, o := range c.disk.objs {
		direct = o.direct
	}
	c.disk.mu.Unlock()
	if direct == nil || direct.off.Load() {
		t.Skipf("the file system of %s refuses O_DIRECT: only the buffered path ran", dir)
	}
	// And back through direct reads, into a new cache, once the page
	// cache no longer holds the file; then, with the file in the page
	// cache again, from there.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Written back first: dirty pages (the buffered tail) stay cached.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if inPageCache(f, 0, 1) {
		t.Skipf("the page cache of %s cannot be dropped on this filesystem", path)
	}
	for _, want := range []int64{0, 4} {
		c2 := newDiskCache(t, dir, &memLoader{data: map[string][]byte{}}, 1<<30)
		if got := readAll(t, c2, id); !bytes.Equal(got, data) {
			t.Fatal("wrong bytes read back from disk")
		}
		c2.Close()
		if s := c2.Stats(); s.DiskHits != 4 || s.Loads != 0 || s.DiskPageCacheHits != want {
			t.Fatalf("disk hits %d (%d from the page cache), remote loads %d; want 4 (%d), 0", s.DiskHits, s.DiskPageCacheHits, s.Loads, want)
		}
		if _, err := os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
	}
}

// An object this process wrote whole, the file changed by nothing else
// in between, is ready for passthrough without reading it back: every
// block was hashed for its record from the bytes written. A change by
// anyone else between two writes means a full read-back.
func TestWrittenWholeSkipsReadBack(t *testing.T) {
	for _, foreign := range []bool{false, true} {
		t.Run(fmt.Sprint("foreign=", foreign), func(t *testing.T) {
			dir := t.TempDir()
			a := randomBytes(4*testBS+100, 33)
			id := ObjectID{Name: "a", Version: "1", Size: int64(len(a))}
			c := newDiskCache(t, dir, &memLoader{data: map[string][]byte{"a1": a}}, 1<<20)
			defer c.Close()
			var mu sync.Mutex
			readBack := 0
			c.disk.verifyHook = func(context.Context, int64) { mu.Lock(); readBack++; mu.Unlock() }
			p := make([]byte, testBS)
			if _, err := c.Object(id).ReadAt(context.Background(), p, 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "write-back", func() bool { return c.Stats().DiskWrites == 1 })
			if foreign {
				// Another process writing the same bytes over a block.
				dataPath, _ := objectFiles(t, dir)
				f, err := os.OpenFile(dataPath, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(a[:testBS], 0)
				f.Close()
			}
			readAll(t, c, id)
			waitFor(t, "write-backs", func() bool { return c.Stats().DiskWrites == 5 })
			if foreign {
				waitFor(t, "read-back", func() bool { _, ok := c.Object(id).Backing(); return ok })
				mu.Lock()
				defer mu.Unlock()
				if readBack != 5 {
					t.Fatalf("read back %d blocks after a foreign write, want 5", readBack)
				}
				return
			}
			b, ok := c.Object(id).Backing()
			if !ok {
				t.Fatal("no Backing right after this process wrote the whole object")
			}
			defer b.Close()
			got := make([]byte, len(a))
			if _, err := b.File.ReadAt(got, 0); err != nil || !bytes.Equal(got, a) {
				t.Fatalf("backing file holds other bytes (%v)", err)
			}
			c.disk.bg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if readBack != 0 {
				t.Fatalf("read back %d blocks of an object this process wrote whole", readBack)
			}
		})
	}
}

// The blocks of a file prefetched ahead of its reader, then opened
// through passthrough, are never read from RAM: once the file is handed
// over they stop holding the bound on prefetch ahead of readers, and
// their buffers are reused before fresh memory.
func TestPassedThroughBlocksFreeTheirBuffersFirst(t *testing.T) {
	a := randomBytes(4*testBS, 40)
	b := randomBytes(2*testBS, 41)
	ida := ObjectID{Name: "a", Version: "1", Size: int64(len(a))}
	idb := ObjectID{Name: "b", Version: "1", Size: int64(len(b))}
	l := &memLoader{data: map[string][]byte{"a1": a, "b1": b}}
	c := newDiskCache(t, t.TempDir(), l, 1<<20)
	defer c.Close()
	c.Object(ida).Prefetch(0, ida.Size)
	waitFor(t, "a prefetched and written back", func() bool {
		s := c.Stats()
		return s.Prefetches == 4 && s.DiskWrites == 4 && len(c.ObjectStats([]ObjectID{ida})[0].Pending.words) == 0
	})
	c.mu.Lock()
	ahead := c.ahead
	c.mu.Unlock()
	if ahead != ida.Size {
		t.Fatalf("%d bytes ahead of readers before the hand-over, want %d", ahead, ida.Size)
	}
	back, ok := c.Object(ida).VerifiedBacking()
	if !ok {
		t.Fatal("no Backing for a complete object")
	}
	defer back.Close()
	c.Object(ida).PassedThrough()
	c.mu.Lock()
	ahead = c.ahead
	c.mu.Unlock()
	before := c.Stats()
	if ahead != 0 || before.PrefetchUsed != ida.Size {
		t.Fatalf("after the hand-over: %d bytes ahead, %d prefetched bytes used; want 0 and %d", ahead, before.PrefetchUsed, ida.Size)
	}
	if got := readAll(t, c, idb); !bytes.Equal(got, b) {
		t.Fatal("b read back other bytes")
	}
	after := c.Stats()
	if fresh, reused := after.FreshBuffers-before.FreshBuffers, after.ReusedBuffers-before.ReusedBuffers; fresh != 0 || reused != 2 {
		t.Fatalf("reading b took %d fresh and %d reused buffers; want 0 and 2", fresh, reused)
	}
}

// crc64Check sums each block with CRC64NVME, as an object checked against
// S3's default checksum is, and passes every object that it saw whole.
type crc64Check struct {
	mu   sync.Mutex
	sums map[int64]uint64
	n    int64 // blocks in the object
}

func (c *crc64Check) Ordered() bool { return false }

func (c *crc64Check) Block(ctx context.Context, i int64, p []byte) error {
	_, _, err := c.BlockCRC64NVME(ctx, i, p)
	return err
}

func (c *crc64Check) BlockCRC64NVME(_ context.Context, i int64, p []byte) (uint64, bool, error) {
	sum := crc64nvme.Checksum(p)
	c.mu.Lock()
	c.sums[i] = sum
	c.mu.Unlock()
	return sum, true, nil
}

func (c *crc64Check) Finish(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int64(len(c.sums)) != c.n {
		return fmt.Errorf("saw %d of %d blocks", len(c.sums), c.n)
	}
	return nil
}

type crc64Verifier struct{}

func (crc64Verifier) Check(id ObjectID) ObjectCheck {
	return &crc64Check{sums: map[int64]uint64{}, n: (id.Size + testBS - 1) / testBS}
}

// A block whose object's check summed it with CRC64NVME is recorded with
// that sum rather than hashed a second time, whether a read loaded it or
// a warm-up filled it; a read back checks it, so a damaged block is still
// refetched; any other block keeps an xxhash64.
func TestDiskRecordsTheCheckCRC(t *testing.T) {
	data := randomBytes(6*testBS+77, 40)
	id := ObjectID{Name: "w.safetensors", Version: "e:1", Size: int64(len(data))}
	block := func(i int64) []byte { return data[i*testBS : min(int64(len(data)), (i+1)*testBS)] }
	for _, crc := range []bool{true, false} {
		for _, fill := range []bool{false, true} {
			t.Run(fmt.Sprintf("crc=%v/fill=%v", crc, fill), func(t *testing.T) {
				recordsTheCheckCRC(t, id, data, block, crc, fill)
			})
		}
	}
}

// recordsTheCheckCRC is one case of TestDiskRecordsTheCheckCRC.
func recordsTheCheckCRC(t *testing.T, id ObjectID, data []byte, block func(int64) []byte, crc, fill bool) {
	dir := t.TempDir()
	var v Verifier = crc64Verifier{}
	if !crc {
		v = &sumVerifier{want: map[string][]byte{id.Name: blockCRCs(data, testBS)}}
	}
	opts := Options{BlockSize: testBS, MemBytes: 1 << 20, Workers: 4, Verifier: v, Disk: &DiskOptions{Dir: dir, MaxBytes: 1 << 30}}
	l := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
	c := New(opts, l)
	if fill {
		for i := int64(0); i < 7; i++ {
			if _, err := c.Fill(context.Background(), id, i); err != nil {
				t.Fatal(err)
			}
		}
	} else if got := readAll(t, c, id); !bytes.Equal(got, data) {
		t.Fatal("first read: wrong bytes")
	}
	c.Close()
	if st, _ := c.Object(id).Verification(); st != Verified {
		t.Fatalf("the object was not verified: %v", st)
	}
	dataPath, metaPath := objectFiles(t, dir)
	meta, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 7; i++ {
		sum, ok := decodeRecord(meta[metaHeaderSize+i*recordSize:metaHeaderSize+(i+1)*recordSize], i)
		want := xxSum(block(i))
		if crc {
			want = blockSum{crc: true, v: crc64nvme.Checksum(block(i))}
		}
		if !ok || sum != want {
			t.Fatalf("record %d: %+v (present %v), want %+v", i, sum, ok, want)
		}
	}

	flipBits(t, dataPath, 2*testBS+9, 0x10)
	l2 := &memLoader{data: l.data}
	c2 := New(opts, l2)
	defer c2.Close()
	if got := readAll(t, c2, id); !bytes.Equal(got, data) {
		t.Fatal("a damaged cache served wrong bytes")
	}
	if got := l2.loadOrder(); len(got) != 1 || got[0] != 2*testBS {
		t.Fatalf("refetched blocks at %v, want the damaged one at %d", got, 2*testBS)
	}
	if s := c2.Stats(); s.DiskCorrupt != 1 || s.DiskHits != 6 {
		t.Fatalf("corrupt %d, disk hits %d; want 1, 6", s.DiskCorrupt, s.DiskHits)
	}
}

// A block on its way to disk holds up neither hits nor other objects'
// writes: the write runs outside the tier's lock. An object removed from
// the directory meanwhile is written afresh, not given up.
func TestDiskWriteLeavesTheTierFree(t *testing.T) {
	dir := t.TempDir()
	objs := map[string][]byte{}
	mk := func(name string, blocks int, seed uint64) ObjectID {
		data := randomBytes(blocks*testBS, seed)
		id := ObjectID{Name: name, Version: "1", Size: int64(len(data))}
		objs[name] = data
		return id
	}
	a, b, c := mk("a", 2, 50), mk("b", 1, 51), mk("c", 1, 52)
	cache := newDiskCache(t, dir, &memLoader{data: map[string][]byte{}}, 1<<30)
	t.Cleanup(cache.Close)
	d := cache.disk
	block := func(id ObjectID, i int64) []byte { return objs[id.Name][i*testBS : (i+1)*testBS] }
	if stored, _ := d.put(b, 0, block(b, 0), xxSum(block(b, 0))); !stored {
		t.Fatal("block of b not stored")
	}

	entered, release := make(chan struct{}), make(chan struct{})
	var holding, released sync.Once
	free := func() { released.Do(func() { close(release) }) }
	t.Cleanup(free) // before Close, should the test fail with the write held
	d.writeHook = func(id ObjectID, i int64) {
		if id.Name == "a" && i == 0 {
			holding.Do(func() {
				close(entered)
				<-release
			})
		}
	}
	// put writes a block in the background and reports whether it stored it.
	put := func(id ObjectID, i int64) <-chan bool {
		ch := make(chan bool, 1)
		go func() {
			stored, _ := d.put(id, i, block(id, i), xxSum(block(id, i)))
			ch <- stored
		}()
		return ch
	}
	held := put(a, 0)
	receive(t, "the write of a's block 0 to start", entered)

	hit := make(chan bool, 1)
	go func() {
		p := make([]byte, testBS)
		hit <- d.get(b, 0, p) && bytes.Equal(p, block(b, 0))
	}()
	if !receive(t, "a hit on b while a's block is written", hit) {
		t.Fatal("b's block was not served from disk")
	}
	if !receive(t, "c's write while a's block is written", put(c, 0)) {
		t.Fatal("c's block was not stored")
	}

	// a's files removed while its block 0 is being written: its next
	// write starts the object afresh.
	if err := os.RemoveAll(filepath.Join(d.root, objectDirID(a, d.bs))); err != nil {
		t.Fatal(err)
	}
	if !receive(t, "a's block 1 into the object written afresh", put(a, 1)) {
		t.Fatal("a's block 1 not stored after its files were removed")
	}
	free()
	if receive(t, "the held write to finish", held) {
		t.Fatal("a block written into removed files counts as stored")
	}
	if stored, _ := d.put(a, 0, block(a, 0), xxSum(block(a, 0))); !stored {
		t.Fatal("a's block 0 not stored again: the object was given up")
	}
	for i := range int64(2) {
		p := make([]byte, testBS)
		if !d.get(a, i, p) || !bytes.Equal(p, block(a, i)) {
			t.Fatalf("a's block %d not served from disk", i)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reserved != 0 || len(d.pending) != 0 {
		t.Fatalf("%d bytes still reserved, %d blocks pending after the writes", d.reserved, len(d.pending))
	}
	if want := int64(4 * testBS); d.used != want {
		t.Fatalf("tier counts %d bytes, want %d", d.used, want)
	}
}

// receive waits, bounded in time, for a value on ch, or for it to close.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// Writes, hits, evictions and drops of a few objects from many goroutines
// at once, in a tier too small for them: every hit has the right bytes,
// no object is given up for a write into files dropped under it, and
// once all is done the tier's accounts match its entries.
func TestDiskTierConcurrentWritesKeepAccounts(t *testing.T) {
	const objects, blocks, workers, ops = 4, 8, 8, 150
	cache := newDiskCache(t, t.TempDir(), &memLoader{data: map[string][]byte{}}, 12*testBS)
	t.Cleanup(cache.Close)
	d := cache.disk
	ids := make([]ObjectID, objects)
	data := make([][]byte, objects)
	for i := range ids {
		data[i] = randomBytes(blocks*testBS, uint64(70+i))
		ids[i] = ObjectID{Name: fmt.Sprint("o", i), Version: "1", Size: int64(len(data[i]))}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			p := make([]byte, testBS)
			for range ops {
				o, i := r.IntN(objects), int64(r.IntN(blocks))
				want := data[o][i*testBS : (i+1)*testBS]
				switch op := r.IntN(10); {
				case op < 5:
					d.put(ids[o], i, want, xxSum(want))
				case op < 9:
					if d.get(ids[o], i, p) && !bytes.Equal(p, want) {
						t.Errorf("object %d block %d: wrong bytes from disk", o, i)
					}
				default:
					if err := d.dropObject(ids[o]); err != nil {
						t.Errorf("dropping object %d: %v", o, err)
					}
				}
			}
		})
	}
	wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.failed) != 0 {
		t.Errorf("objects given up: %v", d.failed)
	}
	if d.reserved != 0 || len(d.pending) != 0 {
		t.Errorf("%d bytes reserved, %d blocks pending after all writes", d.reserved, len(d.pending))
	}
	var used int64
	present := map[*diskObject]int64{}
	for e := d.lru.Front(); e != nil; e = e.Next() {
		de := e.Value.(*diskEntry)
		used += de.n
		present[de.obj]++
		if de.obj.gone {
			t.Errorf("an entry of a forgotten object")
		}
	}
	if used != d.used || used > d.max {
		t.Errorf("entries hold %d bytes, the tier counts %d, budget %d", used, d.used, d.max)
	}
	for _, o := range d.objs {
		if o.present != present[o] || o.busy != 0 {
			t.Errorf("object %s counts %d present (entries: %d), %d reads or writes under way", o.hdr.Name, o.present, present[o], o.busy)
		}
	}
}

// A block on its way to disk is waited for, not fetched again: a hit on
// it and a second write of it (a fill and a load of the same block) both
// wait for the write under way, and then find it there.
func TestDiskBlockBeingWrittenIsWaitedFor(t *testing.T) {
	data := randomBytes(2*testBS, 53)
	id := ObjectID{Name: "a", Version: "1", Size: int64(len(data))}
	cache := newDiskCache(t, t.TempDir(), &memLoader{data: map[string][]byte{}}, 1<<30)
	t.Cleanup(cache.Close)
	d := cache.disk
	b0 := data[:testBS]
	entered, release, waiting := make(chan struct{}), make(chan struct{}), make(chan int64, 2)
	var holding, released sync.Once
	free := func() { released.Do(func() { close(release) }) }
	t.Cleanup(free)
	d.writeHook = func(_ ObjectID, i int64) {
		holding.Do(func() {
			close(entered)
			<-release
		})
	}
	d.awaitHook = func(i int64) { waiting <- i }
	first := make(chan bool, 1)
	go func() {
		stored, _ := d.put(id, 0, b0, xxSum(b0))
		first <- stored
	}()
	receive(t, "the first write to start", entered)
	hit, second := make(chan bool, 1), make(chan bool, 1)
	go func() {
		p := make([]byte, testBS)
		hit <- d.get(id, 0, p) && bytes.Equal(p, b0)
	}()
	go func() {
		stored, _ := d.put(id, 0, b0, xxSum(b0))
		second <- stored
	}()
	for range 2 {
		if i := receive(t, "the hit and the second write to wait", waiting); i != 0 {
			t.Fatalf("waited for block %d, want 0", i)
		}
	}
	free()
	if !receive(t, "the first write", first) || !receive(t, "the second write", second) {
		t.Fatal("a write of the block reports it not stored")
	}
	if !receive(t, "the hit", hit) {
		t.Fatal("the hit on the block being written missed")
	}
	if s := cache.Stats(); s.DiskWrites != 1 || s.DiskHits != 1 || s.DiskMisses != 0 {
		t.Fatalf("disk writes %d, hits %d, misses %d; want 1, 1, 0", s.DiskWrites, s.DiskHits, s.DiskMisses)
	}
}

// flipBits flips the bits of mask in the byte at off of the file at path.
func flipBits(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
