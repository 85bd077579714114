package objsum

import (
	"hash/crc32"
	"hash/crc64"
	"math/rand/v2"
	"testing"
)

// Combined per-block CRCs equal the CRC of the whole, for every split.
func TestCombineMatchesWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<20+333)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	whole := map[string]uint64{
		"CRC32":     uint64(crc32.ChecksumIEEE(data)),
		"CRC32C":    uint64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))),
		"CRC64NVME": crc64.Checksum(data, crc64.MakeTable(0x9a6c9329ac4bc9b5)),
	}
	for name, want := range whole {
		c := LookupCRC(name)
		if got := c.Sum(data); got != want {
			t.Fatalf("%s: Sum %x, want %x", name, got, want)
		}
		for _, bs := range []int{1, 7, 4096, 64 << 10, 1 << 20, len(data)} {
			var sum uint64
			for off := 0; off < len(data); off += bs {
				p := data[off:min(len(data), off+bs)]
				if off == 0 {
					sum = c.Sum(p)
					continue
				}
				sum = c.Combine(sum, c.Sum(p), int64(len(p)))
			}
			if sum != want {
				t.Fatalf("%s, blocks of %d: combined %x, want %x", name, bs, sum, want)
			}
		}
		if a := c.Combine(c.Sum(data), c.Sum(nil), 0); a != want {
			t.Fatalf("%s: combining an empty piece changed the sum", name)
		}
	}
}

// BenchmarkSums is the CPU cost of verifying: one 8 MiB block per op, so
// the reported MB/s converts directly to seconds per GiB.
func BenchmarkSums(b *testing.B) {
	p := make([]byte, 8<<20)
	for _, name := range []string{"CRC64NVME", "CRC32C", "CRC32"} {
		c := LookupCRC(name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				sum := c.Sum(p)
				c.Combine(sum, sum, int64(len(p)))
			}
			reportPerGiB(b, len(p))
		})
	}
	for _, name := range []string{"SHA256", "SHA1", "MD5"} {
		b.Run(name, func(b *testing.B) {
			h := NewOrdered(name)
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				h.Write(p)
			}
			reportPerGiB(b, len(p))
		})
	}
}

// reportPerGiB adds the cost in the unit the benchmarks quote for the
// mount: CPU seconds per GiB verified (one goroutine, so wall time is CPU).
func reportPerGiB(b *testing.B, blockLen int) {
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)*float64(1<<30)/float64(blockLen), "s/GiB")
}
