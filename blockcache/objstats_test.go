package blockcache

import (
	"context"
	"testing"
)

func TestObjectStatsCountEachObjectApart(t *testing.T) {
	const bs = 64 << 10
	a := ObjectID{Name: "a", Version: "v", Size: 3*bs + 10}
	b := ObjectID{Name: "b", Version: "v", Size: 8 * bs}
	l := &memLoader{data: map[string][]byte{"av": randomBytes(int(a.Size), 1), "bv": randomBytes(int(b.Size), 2)}}
	c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 2}, l)
	defer c.Close()

	p := make([]byte, a.Size)
	if _, err := c.Object(a).ReadAt(context.Background(), p, 0); err != nil {
		t.Fatal(err)
	}
	// Read whole, a's blocks are the first reused by b's loads below. With
	// two workers, the read's own later loads may already have reused the
	// buffers of its first blocks, served whole by then; the last block,
	// served last, is still cached.
	stA := c.ObjectStats([]ObjectID{a})[0]
	if stA.CachedBytes > a.Size || !stA.Cached.Has(3) || stA.FetchedBytes != a.Size || stA.Loads != 4 || stA.PrefetchBytes != 0 {
		t.Errorf("a, read whole: %+v; want its last block cached and %d bytes fetched in 4 loads", stA, a.Size)
	}
	// Half of b prefetched, then one of those blocks read.
	c.Object(b).Prefetch(0, 4*bs)
	waitFor(t, "prefetches", func() bool { return c.Stats().Prefetches == 4 })
	waitFor(t, "prefetched blocks ready", func() bool { return c.ObjectStats([]ObjectID{b})[0].CachedBytes == 4*bs })
	if _, err := c.Object(b).ReadAt(context.Background(), make([]byte, 10), bs); err != nil {
		t.Fatal(err)
	}

	st := c.ObjectStats([]ObjectID{a, b, {Name: "never", Version: "v", Size: bs}})
	if st[0].CachedBytes != 0 || st[0].FetchedBytes != a.Size || st[0].Loads != 4 {
		t.Errorf("a, read whole, then its buffers reused: %+v; want none cached, %d bytes fetched in 4 loads", st[0], a.Size)
	}
	if st[1].CachedBytes != 4*bs || st[1].FetchedBytes != 4*bs || st[1].PrefetchBytes != 4*bs {
		t.Errorf("b, half prefetched: %+v; want %d bytes cached, fetched and prefetched", st[1], 4*bs)
	}
	for i := int64(0); i < 8; i++ {
		if st[1].Cached.Has(i) != (i < 4) {
			t.Errorf("b: block %d cached = %v", i, st[1].Cached.Has(i))
		}
	}
	if st[2].CachedBytes != 0 || st[2].FetchedBytes != 0 || st[2].Cached.Has(0) {
		t.Errorf("an object never read: %+v", st[2])
	}
	if s := c.Stats(); s.PrefetchUsed != bs || s.BytesLoaded != a.Size+4*bs {
		t.Errorf("prefetch used %d, loaded %d; want %d, %d", s.PrefetchUsed, s.BytesLoaded, bs, a.Size+4*bs)
	}
}

// Blocks found on disk count as cached, not as fetched.
func TestObjectStatsSeeTheDiskTier(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(5*testBS+7, 3)
	id := ObjectID{Name: "m/x", Version: "e:1", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{id.Name + id.Version: data}}
	c1 := newDiskCache(t, dir, l, 1<<30)
	readAll(t, c1, id)
	c1.Close()
	if st := c1.ObjectStats([]ObjectID{id})[0]; st.FetchedBytes != id.Size || st.DiskBytes != id.Size {
		t.Fatalf("first cache: %+v; want %d bytes fetched and on disk", st, id.Size)
	}

	c2 := newDiskCache(t, dir, l, 1<<30)
	defer c2.Close()
	st := c2.ObjectStats([]ObjectID{id})[0]
	if st.CachedBytes != id.Size || st.DiskBytes != id.Size || st.MemBytes != 0 || st.FetchedBytes != 0 {
		t.Fatalf("a new cache on the same dir: %+v; want all %d bytes cached on disk, none fetched", st, id.Size)
	}
	readAll(t, c2, id)
	st = c2.ObjectStats([]ObjectID{id})[0]
	// RAM holds what was read, less the blocks later loads of the same
	// read already reused: a block served whole goes first (see allocate),
	// and how many were served before the last loads began depends on the
	// workers' timing.
	if st.CachedBytes != id.Size || st.MemBytes == 0 || st.FetchedBytes != 0 {
		t.Fatalf("after a read from disk: %+v", st)
	}
	if s := c2.Stats(); s.BytesLoaded != 0 || s.DiskHits != 6 {
		t.Fatalf("loaded %d bytes, %d disk hits; want 0 and 6", s.BytesLoaded, s.DiskHits)
	}
}

// Blocks queued or loading are Pending, then Cached once loaded.
func TestObjectStatsSeePendingBlocks(t *testing.T) {
	const bs = 64 << 10
	id := ObjectID{Name: "p", Version: "v", Size: 8 * bs}
	l := &memLoader{data: map[string][]byte{"pv": randomBytes(int(id.Size), 4)}, gate: make(chan struct{})}
	c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 1}, l)
	defer c.Close()
	c.Object(id).Prefetch(2*bs, 3*bs) // the worker takes block 2 and waits at the gate
	st := c.ObjectStats([]ObjectID{id})[0]
	for i := int64(0); i < 8; i++ {
		if st.Pending.Has(i) != (i >= 2 && i < 5) || st.Cached.Has(i) {
			t.Errorf("block %d, held at the loader: pending %v, cached %v; want pending blocks 2–4 only", i, st.Pending.Has(i), st.Cached.Has(i))
		}
	}
	close(l.gate)
	waitFor(t, "the prefetched blocks", func() bool { return c.ObjectStats([]ObjectID{id})[0].CachedBytes == 3*bs })
	st = c.ObjectStats([]ObjectID{id})[0]
	for i := int64(2); i < 5; i++ {
		if st.Pending.Has(i) || !st.Cached.Has(i) {
			t.Errorf("block %d, loaded: pending %v, cached %v", i, st.Pending.Has(i), st.Cached.Has(i))
		}
	}
}
