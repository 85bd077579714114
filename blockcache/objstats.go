package blockcache

import "sync/atomic"

// objKey names one object version.
type objKey struct{ source, name, version string }

// objCounters are one object version's counters, kept for the life of the
// cache. Each block points at its object's, so a load is counted with an
// atomic add and no lookup.
type objCounters struct {
	fetched, loads, prefetched atomic.Int64
	// delivered holds the blocks a demand read has been served from, under
	// Cache.mu: the reader's page cache likely still holds them.
	delivered BlockSet
}

// countersLocked returns id's counters, creating them on first use.
// Called with c.mu held.
func (c *Cache) countersLocked(id ObjectID) *objCounters {
	k := objKey{id.Source, id.Name, id.Version}
	oc := c.objCounters[k]
	if oc == nil {
		if c.objCounters == nil {
			c.objCounters = map[objKey]*objCounters{}
		}
		oc = &objCounters{}
		c.objCounters[k] = oc
	}
	return oc
}

func (c *Cache) countersFor(id ObjectID) *objCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.countersLocked(id)
}

// ObjectStats is one object's share of the cache.
type ObjectStats struct {
	// CachedBytes counts the bytes of the object's blocks held in RAM or
	// on disk, each block once.
	CachedBytes int64
	// MemBytes and DiskBytes split CachedBytes by tier; a block in both
	// counts in both.
	MemBytes, DiskBytes int64
	// FetchedBytes is what was loaded from the source for the object since
	// the cache started, in Loads loads.
	FetchedBytes, Loads int64
	// PrefetchBytes is what prefetch loads brought in (from disk or the
	// source).
	PrefetchBytes int64
	// Cached holds the index of every block counted in CachedBytes.
	Cached BlockSet
	// Pending holds the blocks queued or loading: what will be fetched
	// (or read from disk) without another request. A prefetch held by
	// the bound on prefetch ahead of readers stays here until it starts.
	Pending BlockSet
	// Verify is where the object stands against its store's checksum.
	Verify VerifyState
}

// BlockSet is a set of block indexes. It is sparse: its size follows the
// blocks cached, not the object's size, which may be absurd.
type BlockSet struct{ words map[int64]uint64 }

// Has reports whether block i is in the set.
func (s BlockSet) Has(i int64) bool {
	return i >= 0 && s.words[i/64]&(1<<(i%64)) != 0
}

func (s *BlockSet) add(i int64) {
	if i < 0 {
		return
	}
	if s.words == nil {
		s.words = map[int64]uint64{}
	}
	s.words[i/64] |= 1 << (i % 64)
}

// ObjectStats returns a snapshot for each of ids, in order. The disk tier
// is seen as this cache indexes it: what it found at start or its last
// rescan of the directory, and what it has read and written since.
func (c *Cache) ObjectStats(ids []ObjectID) []ObjectStats {
	bs := c.opts.BlockSize
	out := make([]ObjectStats, len(ids))
	at := make(map[objKey]int, len(ids))
	for i, id := range ids {
		at[objKey{id.Source, id.Name, id.Version}] = i
	}
	c.mu.Lock()
	for k, b := range c.blocks {
		i, ok := at[objKey{k.source, k.name, k.version}]
		switch {
		case !ok:
		case b.state != stateReady:
			out[i].Pending.add(k.index)
		default:
			out[i].MemBytes += b.size
			out[i].Cached.add(k.index)
		}
	}
	for i, id := range ids {
		if oc := c.objCounters[objKey{id.Source, id.Name, id.Version}]; oc != nil {
			out[i].FetchedBytes, out[i].Loads, out[i].PrefetchBytes = oc.fetched.Load(), oc.loads.Load(), oc.prefetched.Load()
		}
	}
	c.mu.Unlock()
	if t := c.disk; t != nil {
		byDir := make(map[string]int, len(ids))
		for i, id := range ids {
			byDir[objectDirID(id, t.bs)] = i
		}
		t.mu.Lock()
		for k, e := range t.entries {
			if i, ok := byDir[k.id]; ok {
				out[i].DiskBytes += e.Value.(*diskEntry).n
				out[i].Cached.add(k.index)
			}
		}
		t.mu.Unlock()
	}
	for i, id := range ids {
		out[i].Verify, _ = c.Object(id).Verification()
		for w, word := range out[i].Cached.words {
			for b := int64(0); word != 0; b++ {
				if word&1 != 0 {
					off := (int64(w)*64 + b) * bs
					out[i].CachedBytes += min(bs, id.Size-off)
				}
				word >>= 1
			}
		}
	}
	return out
}
