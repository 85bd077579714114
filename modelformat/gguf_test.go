package modelformat

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/modelformat/formattest"
)

func TestGGUFParse(t *testing.T) {
	for _, align := range []uint32{32, 64, 8} {
		t.Run(fmt.Sprint("align ", align), func(t *testing.T) {
			g := formattest.WriteGGUF(t, align, formattest.LlamaGGUFTensors...)
			hdr, ts, err := parseGGUF(formattest.NewStrict(t, g.Data), int64(len(g.Data)), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if hdr != g.DataStart {
				t.Errorf("data start %d, want %d", hdr, g.DataStart)
			}
			if len(ts) != len(formattest.LlamaGGUFTensors) {
				t.Fatalf("%d tensors, want %d", len(ts), len(formattest.LlamaGGUFTensors))
			}
			for i, want := range formattest.LlamaGGUFTensors {
				if got := ts[i]; got.Name != want.Name || got.Offset != g.Offsets[want.Name] || got.Length != int64(want.Size) || fmt.Sprint(got.Shape) != fmt.Sprint(want.Dims) || got.DType != ggmlTypes[want.Type].name {
					t.Errorf("tensor %d = %+v, want %s at %d, %d bytes", i, got, want.Name, g.Offsets[want.Name], want.Size)
				}
			}
		})
	}
}

// A tensor of a type ggml's table lacks runs to the next tensor, or to the
// end of the data for the last one.
func TestGGUFUnknownTypeBoundedByNeighbours(t *testing.T) {
	g := formattest.WriteGGUF(t, 32,
		formattest.GGUFTensor{Name: "blk.0.a", Dims: []uint64{100}, Type: 99, Size: 40}, // unknown type 99, 40 bytes → padded to 64
		formattest.GGUFTensor{Name: "blk.0.b", Dims: []uint64{8}, Type: 0, Size: 32},
		formattest.GGUFTensor{Name: "blk.1.c", Dims: []uint64{3}, Type: 1000, Size: 10},
	)
	_, ts, err := parseGGUF(formattest.NewStrict(t, g.Data), int64(len(g.Data)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []tensorRange{
		{"blk.0.a", g.DataStart, 64},
		{"blk.0.b", g.DataStart + 64, 32},
		{"blk.1.c", g.DataStart + 96, 10},
	}
	if fmt.Sprint(ranges(ts)) != fmt.Sprint(want) {
		t.Errorf("tensors %v, want %v", ranges(ts), want)
	}
}

func TestGGUFNoTensors(t *testing.T) {
	// llama.cpp's vocab-only files: a header and nothing after it.
	data := (&formattest.GGUFEncoder{}).Head(0, 1).Str("general.architecture").U32(ggufString).Str("llama").B
	hdr, ts, err := parseGGUF(formattest.NewStrict(t, data), int64(len(data)), 1<<20)
	if err != nil || hdr != int64(len(data)) || len(ts) != 0 {
		t.Fatalf("got %d, %v, %v; want the whole file as header", hdr, ts, err)
	}
}

func TestGGUFRejects(t *testing.T) {
	e := func() *formattest.GGUFEncoder { return &formattest.GGUFEncoder{} }
	one := func(typ uint32, dims []uint64, off uint64) []byte { // one tensor, 64 data bytes
		return e().Head(1, 0).Info("w", dims, typ, off).Pad(32).Raw(make([]byte, 64)...).B
	}
	tests := []struct {
		name string
		data []byte
		size int64 // the size the file claims; 0: len(data)
		max  int64 // MaxHeader; 0: 1 MiB
		want string
	}{
		{"empty", nil, 0, 0, "beyond the end"},
		{"bad magic", e().Raw([]byte("GGML")...).U32(3).U64(0).U64(0).B, 0, 0, "bad magic"},
		{"version 1", e().Raw([]byte("GGUF")...).U32(1).U64(0).U64(0).B, 0, 0, "version 1"},
		{"big-endian", e().Raw([]byte("GGUF")...).U32(3 << 24).U64(0).U64(0).B, 0, 0, "big-endian"},
		{"huge tensor count", e().Head(1<<62, 0).B, 0, 0, "cannot fit"},
		{"max tensor count", e().Head(math.MaxUint64, 0).B, 0, 0, "cannot fit"},
		{"huge KV count", e().Head(0, 1<<60).B, 0, 0, "cannot fit"},
		{"key length beyond file", e().Head(0, 1).U64(1 << 40).Raw([]byte("general")...).B, 0, 0, "beyond the end"},
		{"key length max", e().Head(0, 1).U64(math.MaxUint64).U64(0).B, 0, 0, "beyond the end"},
		{"string value beyond file", e().Head(0, 1).Str("k").U32(ggufString).U64(1 << 50).B, 0, 0, "beyond the end"},
		{"unknown value type", e().Head(0, 1).Str("k").U32(13).U64(0).B, 0, 0, "unknown value type 13"},
		{"nested array", e().Head(0, 1).Str("k").U32(ggufArray).U32(ggufArray).U64(1).B, 0, 0, "not supported"},
		{"array count huge", e().Head(0, 1).Str("k").U32(ggufArray).U32(ggufUint64).U64(1 << 61).B, 0, 0, "cannot fit"},
		{"string array count huge", e().Head(0, 1).Str("k").U32(ggufArray).U32(ggufString).U64(1 << 61).B, 0, 0, "cannot fit"},
		{"alignment not uint32", e().Head(0, 1).Str("general.alignment").U32(ggufUint64).U64(64).B, 0, 0, "want uint32"},
		{"alignment not a power of two", e().Head(0, 1).Str("general.alignment").U32(ggufUint32).U32(48).B, 0, 0, "power of two"},
		{"alignment zero", e().Head(0, 1).Str("general.alignment").U32(ggufUint32).U32(0).B, 0, 0, "power of two"},
		{"tensor name too long", e().Head(1, 0).U64(1 << 20).B, 1 << 30, 0, "exceeds"},
		{"too many dims", e().Head(1, 0).Info("w", []uint64{1, 1, 1, 1, 1}, 0, 0).B, 0, 0, "5 dims"},
		{"tensor offset beyond file", one(0, []uint64{4}, 1<<40), 0, 0, "past the"},
		{"tensor offset max", one(0, []uint64{4}, math.MaxUint64-31), 0, 0, "past the"},
		{"tensor runs past the end", one(0, []uint64{17}, 0), 0, 0, "runs past"},
		{"unaligned offset", one(0, []uint64{4}, 4), 0, 0, "aligned"},
		{"shape overflows", one(0, []uint64{1 << 32, 1 << 32, 1 << 32}, 0), 0, 0, "overflows"},
		{"size overflows", one(0, []uint64{1 << 62}, 0), 0, 0, "overflows"},
		{"partial block", one(8, []uint64{33}, 0), 0, 0, "multiple"},
		{"overlapping", e().Head(2, 0).Info("a", []uint64{16}, 0, 0).Info("b", []uint64{16}, 0, 32).Pad(32).Raw(make([]byte, 96)...).B, 0, 0, "overlap"},
		{"data start past the end", e().Head(1, 0).Info("w", []uint64{0}, 0, 0).B, 0, 0, "past the end"},
		{"header over MaxHeader", e().Head(0, 1).Str("k").U32(ggufString).Str(strings.Repeat("x", 100)).B, 0, 64, "header limit"},
		{"truncated tensor info", e().Head(1, 0).Str("w").U32(2).U64(4).U64(4).B, 0, 0, "beyond the end"},
		// Lengths that fit what the file claims (1 GiB) but not what it
		// holds must fail on reading, having allocated nothing big.
		{"claimed key not there", e().Head(0, 1).U64(50 << 20).B, 1 << 30, 100 << 20, "unexpected EOF"},
		{"claimed string array not there", e().Head(0, 1).Str("k").U32(ggufArray).U32(ggufString).U64(10 << 20).B, 1 << 30, 100 << 20, "unexpected EOF"},
		{"claimed tensors not there", e().Head(ggufMaxTensors, ggufMaxKV).B, 1 << 30, 100 << 20, "unexpected EOF"},
		// Counts the bytes would allow but no real file has.
		{"too many tensors", e().Head(ggufMaxTensors+1, 0).B, 1 << 30, 100 << 20, "more than"},
		{"too many keys", e().Head(0, ggufMaxKV+1).B, 1 << 30, 100 << 20, "more than"},
		{"array over the limit", e().Head(0, 1).Str("k").U32(ggufArray).U32(ggufUint8).U64(ggufMaxArray + 1).B, 1 << 30, 100 << 20, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := formattest.NewStrict(t, tt.data)
			if tt.size != 0 {
				r.Size = tt.size
			}
			if tt.max == 0 {
				tt.max = 1 << 20
			}
			var err error
			alloc := formattest.Allocated(func() { _, _, err = parseGGUF(r, r.Size, tt.max) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if alloc > 4<<20 {
				t.Errorf("rejecting it allocated %d bytes", alloc)
			}
		})
	}
}

func FuzzGGUFHeader(f *testing.F) {
	f.Add(formattest.WriteGGUF(f, 32, formattest.LlamaGGUFTensors...).Data)
	f.Add(formattest.WriteGGUF(f, 64, formattest.LlamaGGUFTensors[:3]...).Data)
	f.Add(formattest.WriteGGUF(f, 32, formattest.GGUFTensor{Name: "a", Dims: []uint64{100}, Type: 99, Size: 40}, formattest.GGUFTensor{Name: "b", Dims: []uint64{8}, Type: 0, Size: 32}).Data)
	f.Add((&formattest.GGUFEncoder{}).Head(0, 0).B)
	f.Add((&formattest.GGUFEncoder{}).Head(1<<62, 1<<62).B)
	f.Add((&formattest.GGUFEncoder{}).Head(0, 1).Str("k").U32(ggufArray).U32(ggufString).U64(1 << 61).B)
	f.Add((&formattest.GGUFEncoder{}).Head(2, 0).Info("a", []uint64{16}, 0, 0).Info("b", []uint64{16}, 0, 32).Pad(32).Raw(make([]byte, 96)...).B)
	f.Add([]byte("GGUF"))
	f.Add(hostileGGUF("tensors", 4<<10))
	f.Add(hostileGGUF("metadata", 4<<10))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		var hdr int64
		var ts []Tensor
		var err error
		alloc := formattest.Allocated(func() { hdr, ts, err = parseGGUF(formattest.NewStrict(t, data), size, 1<<20) })
		if limit := ggufAllocBound(len(data)); alloc > limit {
			t.Fatalf("parsing %d bytes allocated %d, over the bound of %d", len(data), alloc, limit)
		}
		if err != nil {
			return
		}
		checkWithin(t, hdr, ts, size)
	})
}

// ggufAllocBound is the most parsing a GGUF file of n bytes may allocate:
// a small multiple of what it holds, whatever its header says.
func ggufAllocBound(n int) uint64 { return 4*uint64(n) + 64<<10 }

// hostileGGUF returns a valid file with a header of about n bytes built to
// make a parser allocate: as many (empty) tensors as fit, or metadata of
// long strings and big arrays.
func hostileGGUF(kind string, n int) []byte {
	e := &formattest.GGUFEncoder{}
	switch kind {
	case "tensors":
		count := min(uint64(n/32), ggufMaxTensors)
		e.Head(count, 0)
		for i := range count {
			e.Info(fmt.Sprintf("%x", i), []uint64{0}, 0, 0)
		}
	case "metadata":
		e.Head(0, 3)
		e.Str("k1").U32(ggufString).Str(strings.Repeat("s", n/3))
		e.Str("k2").U32(ggufArray).U32(ggufString).U64(uint64(n / 3 / 9))
		for range n / 3 / 9 {
			e.Str("a")
		}
		e.Str("k3").U32(ggufArray).U32(ggufUint64).U64(uint64(n / 3 / 8))
		e.Raw(make([]byte, n/3/8*8)...)
	}
	return e.Pad(32).B
}

// A maximal hostile header is parsed within a small multiple of its size,
// and keeps only names and offsets.
func TestGGUFHostileHeaderMemory(t *testing.T) {
	for _, kind := range []string{"tensors", "metadata"} {
		t.Run(kind, func(t *testing.T) {
			data := hostileGGUF(kind, 8<<20)
			var ts []Tensor
			var err error
			alloc := formattest.Allocated(func() { _, ts, err = parseGGUF(formattest.NewStrict(t, data), int64(len(data)), 100<<20) })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d-byte header, %d tensors: allocated %d bytes (%.2fx)", len(data), len(ts), alloc, float64(alloc)/float64(len(data)))
			if limit := ggufAllocBound(len(data)); alloc > limit {
				t.Errorf("parsing allocated %d bytes, over the bound of %d", alloc, limit)
			}
		})
	}
}
