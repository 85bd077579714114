package blockcache

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkDiskHitDuringWriteBack times disk-tier hits of one object
// while loads of others write back 8 MiB blocks, as a reload from disk
// does while another model loads cold. It reports the hits' median and
// 99th percentile in µs and the write-back rate.
func BenchmarkDiskHitDuringWriteBack(b *testing.B) {
	const bs = 8 << 20
	const writers = 4
	c := New(Options{BlockSize: bs, MemBytes: bs, Workers: 1, Disk: &DiskOptions{Dir: b.TempDir(), MaxBytes: 1 << 30}}, &memLoader{data: map[string][]byte{}})
	defer c.Close()
	d := c.disk
	hot := ObjectID{Name: "hot", Version: "1", Size: bs}
	p := randomBytes(bs, 60)
	if stored, _ := d.put(hot, 0, p, xxSum(p)); !stored {
		b.Fatal("hot block not stored")
	}
	sum := xxSum(p)
	var stop atomic.Bool
	var written atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			// Each writer cycles through its own objects; the tier's
			// budget evicts the oldest.
			for i := 0; !stop.Load(); i++ {
				id := ObjectID{Name: "cold", Version: string(rune('a'+w)) + string(rune('a'+i%16)), Size: bs}
				if stored, _ := d.put(id, 0, p, sum); stored {
					written.Add(bs)
				}
				d.mu.Lock()
				if o, err := d.object(id, false); err == nil {
					d.dropLocked(o, 0)
				}
				d.mu.Unlock()
			}
		})
	}
	q := make([]byte, bs)
	lat := make([]time.Duration, 0, b.N)
	start := time.Now()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if !d.get(hot, 0, q) {
			b.Fatal("hot block missed")
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	stop.Store(true)
	wg.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(written.Load())/time.Since(start).Seconds()/1e6, "write-MB/s")
}
