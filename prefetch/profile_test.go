package prefetch

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/modelfs/modelfs/modelformat/loadorder"
)

const profMiB int64 = 1 << 20

func profEntry(path string, off, n int64) loadorder.Entry {
	return loadorder.Entry{Path: path, Version: "v1", Off: off, Len: n}
}

func wantEntries(t *testing.T, got, want []loadorder.Entry) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("entries:\n got %v\nwant %v", got, want)
	}
}

func TestRecorderKeepsFirstReadOrderOnce(t *testing.T) {
	r := NewRecorder(4 * profMiB)
	r.Record("a", "v1", 0, 10)                 // a [0,4)
	r.Record("b", "v1", 0, 4096)               // b [0,4)
	r.Record("a", "v1", 100, 4096)             // a repeat: nothing
	r.Record("a", "v1", 4*profMiB+1, 10)       // a [4,8) follows a's latest entry: a [0,8)
	r.Record("b", "v1", 12*profMiB, 10)        // b [12,16): not contiguous, a new entry
	r.Record("b", "v1", 0, 16*profMiB)         // only b [4,12) is new, and b's latest entry ends at 16
	r.Record("a", "v2", 0, 10)                 // another version is another object
	r.Record("a", "v1", 8*profMiB-1, 2)        // spans a seen and a new block: a [0,12)
	r.Record("a", "v1", 0, 12*profMiB)         // all seen
	r.Record("c", "v1", 0, 0)                  // empty reads are ignored
	r.Record("c", "v1", -4096, 10)             // and so are negative offsets
	r.Record("b", "v1", 12*profMiB, 8*profMiB) // b [16,20) follows b's latest entry b [4,12)? no: a new entry
	r.Record("b", "v1", 20*profMiB, 1)         // b [20,24) follows it
	wantEntries(t, r.Entries(), []loadorder.Entry{
		profEntry("a", 0, 12*profMiB),
		profEntry("b", 0, 4*profMiB),
		profEntry("b", 12*profMiB, 4*profMiB),
		profEntry("b", 4*profMiB, 8*profMiB),
		{Path: "a", Version: "v2", Off: 0, Len: 4 * profMiB},
		profEntry("b", 16*profMiB, 8*profMiB),
	})
	if r.Truncated() {
		t.Fatal("truncated")
	}
}

func TestRecorderAlignsToBlocks(t *testing.T) {
	r := NewRecorder(4 * profMiB)
	r.Record("f", "v", 5*profMiB, 10)
	wantEntries(t, r.Entries(), []loadorder.Entry{{Path: "f", Version: "v", Off: 4 * profMiB, Len: 4 * profMiB}})

	// A read straddling a block boundary takes both blocks.
	r = NewRecorder(4 * profMiB)
	r.Record("f", "v", 4*profMiB-1, 2)
	wantEntries(t, r.Entries(), []loadorder.Entry{{Path: "f", Version: "v", Off: 0, Len: 8 * profMiB}})

	// A read ending exactly on a boundary does not take the next block.
	r = NewRecorder(4 * profMiB)
	r.Record("f", "v", 0, 4*profMiB)
	wantEntries(t, r.Entries(), []loadorder.Entry{{Path: "f", Version: "v", Off: 0, Len: 4 * profMiB}})
}

func TestRecorderFillsGapsBetweenSeenBlocks(t *testing.T) {
	r := NewRecorder(profMiB)
	for _, b := range []int64{1, 3, 5} {
		r.Record("f", "v1", b*profMiB, 1)
	}
	r.Record("f", "v1", 0, 7*profMiB) // the gaps 0, 2, 4, 6, in order
	r.Record("f", "v1", 7*profMiB, 1) // follows the latest entry, 6
	wantEntries(t, r.Entries(), []loadorder.Entry{
		profEntry("f", 1*profMiB, profMiB),
		profEntry("f", 3*profMiB, profMiB),
		profEntry("f", 5*profMiB, profMiB),
		profEntry("f", 0, profMiB),
		profEntry("f", 2*profMiB, profMiB),
		profEntry("f", 4*profMiB, profMiB),
		profEntry("f", 6*profMiB, 2*profMiB),
	})
}

func TestRecorderClampsAtTheEndOfInt64(t *testing.T) {
	r := NewRecorder(4 * profMiB)
	r.Record("f", "v", math.MaxInt64-10, 100) // off+n overflows
	r.Record("f", "v", 0, math.MaxInt64)      // everything, without a bitmap of 2^41 blocks
	es := r.Entries()
	if len(es) != 2 {
		t.Fatalf("entries %v", es)
	}
	for _, e := range es {
		if e.Off < 0 || e.Len <= 0 || e.Off > math.MaxInt64-e.Len {
			t.Fatalf("bad entry %+v", e)
		}
	}
	if es[0].Off+es[0].Len != math.MaxInt64 || es[1].Off != 0 || es[1].Len != es[0].Off {
		t.Fatalf("entries %v", es)
	}
	var buf bytes.Buffer
	if err := loadorder.WriteProfile(&buf, es); err != nil {
		t.Fatal(err)
	}
}

func TestRecorderConcurrentRecordsEachBlockOnce(t *testing.T) {
	const files, blocks, workers = 4, 256, 8
	r := NewRecorder(profMiB)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range files * blocks {
				// Each worker walks the blocks in its own order, with reads
				// of various sizes and offsets.
				j := (i*(2*w+1) + w*37) % (files * blocks)
				f, b := j%files, int64(j/files)
				r.Record(fmt.Sprintf("f%d", f), "v", b*profMiB+int64(w)*1000, int64(1+w*300_000))
			}
		}()
	}
	wg.Wait()
	covered := map[string][]bool{}
	for _, e := range r.Entries() {
		if e.Off%profMiB != 0 || e.Len%profMiB != 0 {
			t.Fatalf("unaligned entry %+v", e)
		}
		c := covered[e.Path]
		if c == nil {
			c = make([]bool, blocks+2)
			covered[e.Path] = c
		}
		for b := e.Off / profMiB; b < (e.Off+e.Len)/profMiB; b++ {
			if c[b] {
				t.Fatalf("block %d of %s recorded twice", b, e.Path)
			}
			c[b] = true
		}
	}
	for f := range files {
		c := covered[fmt.Sprintf("f%d", f)]
		for b := range blocks {
			if c == nil || !c[b] {
				t.Fatalf("block %d of f%d not recorded", b, f)
			}
		}
	}
}

func TestRecorderStopsAtMaxEntries(t *testing.T) {
	r := NewRecorder(profMiB)
	r.MaxEntries = 3
	for b := int64(0); b < 10; b += 2 { // never contiguous: one entry each
		r.Record("f", "v", b*profMiB, 1)
	}
	want := []loadorder.Entry{profEntry("f", 0, profMiB), profEntry("f", 2*profMiB, profMiB), profEntry("f", 4*profMiB, profMiB)}
	want[0].Version, want[1].Version, want[2].Version = "v", "v", "v"
	wantEntries(t, r.Entries(), want)
	if !r.Truncated() {
		t.Fatal("Truncated() = false after dropping reads")
	}
	// Once truncated, nothing changes, not even a coalescing read.
	r.Record("f", "v", 5*profMiB, 1)
	wantEntries(t, r.Entries(), want)

	r = NewRecorder(profMiB)
	if r.MaxEntries != DefaultMaxEntries || DefaultMaxEntries != 1<<20 {
		t.Fatalf("default MaxEntries %d", r.MaxEntries)
	}
}

func BenchmarkRecorderRecordSeen(b *testing.B) {
	r := NewRecorder(8 * profMiB)
	paths := []string{"model-00001.safetensors", "model-00002.safetensors", "model-00003.safetensors", "model-00004.safetensors"}
	for _, p := range paths {
		r.Record(p, "\"etag\"", 0, 4<<30)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var i int64
		for pb.Next() {
			i++
			r.Record(paths[i%4], "\"etag\"", (i*128<<10)%(4<<30), 128<<10)
		}
	})
}

func BenchmarkRecorderRecordNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		r := NewRecorder(8 * profMiB)
		for off := int64(0); off < 1<<30; off += 128 << 10 {
			r.Record("model.safetensors", "v", off, 128<<10)
		}
	}
}
