package pack

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"

	"github.com/modelfs/modelfs/tests/modelgen"
)

// benchShard is a 64 MiB modelgen shard: bf16 N(0, 0.02) weights, the
// closest generated stand-in for a real checkpoint.
var benchShard = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "pack-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	_, err = modelgen.Generate(dir, modelgen.Options{TotalBytes: 64 << 20, Shards: 1, Seed: 1})
	if err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, modelgen.ShardName(0, 1)))
})

func shard(b *testing.B) ([]byte, Layout) {
	data, err := benchShard()
	if err != nil {
		b.Fatal(err)
	}
	l, err := DetectLayout("model.safetensors", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		b.Fatal(err)
	}
	return data, l
}

// BenchmarkDecode decodes a packed shard on one goroutine, in 8 MiB
// block-aligned reads as the block cache makes them: MB/s is of original
// bytes, per core.
func BenchmarkDecode(b *testing.B) {
	data, l := shard(b)
	packed, ix := encodeBytes(b, data, EncodeOptions{Layout: l})
	r, err := NewReader(bytes.NewReader(packed), ix)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 8<<20)
	b.SetBytes(int64(len(data)))
	cpu0 := cpuSeconds(b)
	for b.Loop() {
		for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
			if _, err := r.ReadAt(buf, off); err != nil && off+int64(len(buf)) < int64(len(data)) {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(packed))/float64(len(data)), "packed/orig")
	reportCPU(b, cpu0, int64(len(data)))
}

// cpuSeconds is the process's user and system CPU time so far: on a
// shared machine, throughput per CPU second says more about the code than
// per wall-clock second.
func cpuSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// reportCPU reports MB decoded per CPU second since cpu0.
func reportCPU(b *testing.B, cpu0 float64, bytes int64) {
	if d := cpuSeconds(b) - cpu0; d > 0 {
		b.ReportMetric(float64(bytes)*float64(b.N)/1e6/d, "MB/cpu-s")
	}
}

// BenchmarkEncode packs the shard with one worker: MB/s per core.
func BenchmarkEncode(b *testing.B) {
	data, l := shard(b)
	b.SetBytes(int64(len(data)))
	cpu0 := cpuSeconds(b)
	for b.Loop() {
		if _, err := Encode(b.Context(), &bytes.Buffer{}, bytes.NewReader(data), int64(len(data)), EncodeOptions{Layout: l, Workers: 1}); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu0, int64(len(data)))
}

// BenchmarkHighBytes compares the codecs tried for the high-byte stream
// of bf16 weights (sign and exponent): huff0 blocks, as the format uses,
// against zstd. MB/s is of high bytes decoded, per core.
func BenchmarkHighBytes(b *testing.B) {
	data, l := shard(b)
	var hi []byte
	for _, s := range l.Float16 {
		for i := s.Off; i+1 < s.Off+s.Len; i += 2 {
			hi = append(hi, data[i+1])
		}
	}
	hi = hi[:len(hi)/huffBlock*huffBlock]
	b.Run("huff0", func(b *testing.B) {
		e, err := newFrameEncoder()
		if err != nil {
			b.Fatal(err)
		}
		enc := e.appendBlocks(nil, hi)
		var hs huff0.Scratch
		out := make([]byte, len(hi))
		b.SetBytes(int64(len(hi)))
		cpu0 := cpuSeconds(b)
		for b.Loop() {
			if _, err := decodeBlocks(&hs, enc, out); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0, int64(len(hi)))
		b.ReportMetric(float64(len(enc))/float64(len(hi)), "packed/orig")
	})
	for name, level := range map[string]zstd.EncoderLevel{"zstd-fastest": zstd.SpeedFastest, "zstd-default": zstd.SpeedDefault} {
		b.Run(name, func(b *testing.B) {
			z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1))
			if err != nil {
				b.Fatal(err)
			}
			// One zstd frame per 2 MiB, the high bytes of one 4 MiB frame.
			var encs [][]byte
			total := 0
			for off := 0; off < len(hi); off += DefaultFrameSize / 2 {
				e := z.EncodeAll(hi[off:min(off+DefaultFrameSize/2, len(hi))], nil)
				encs = append(encs, e)
				total += len(e)
			}
			d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
			if err != nil {
				b.Fatal(err)
			}
			out := make([]byte, 0, DefaultFrameSize/2)
			b.SetBytes(int64(len(hi)))
			cpu0 := cpuSeconds(b)
			for b.Loop() {
				for _, e := range encs {
					if out, err = d.DecodeAll(e, out[:0]); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportCPU(b, cpu0, int64(len(hi)))
			b.ReportMetric(float64(total)/float64(len(hi)), "packed/orig")
		})
	}
}
