package modelformat

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
)

// ggufEnc builds GGUF bytes field by field, malformed ones included.
type ggufEnc struct{ b []byte }

func (e *ggufEnc) raw(p ...byte) *ggufEnc { e.b = append(e.b, p...); return e }
func (e *ggufEnc) u32(v uint32) *ggufEnc {
	e.b = binary.LittleEndian.AppendUint32(e.b, v)
	return e
}
func (e *ggufEnc) u64(v uint64) *ggufEnc {
	e.b = binary.LittleEndian.AppendUint64(e.b, v)
	return e
}
func (e *ggufEnc) str(s string) *ggufEnc { return e.u64(uint64(len(s))).raw([]byte(s)...) }

// head writes magic, version and the two counts.
func (e *ggufEnc) head(tensors, kvs uint64) *ggufEnc {
	return e.raw([]byte("GGUF")...).u32(3).u64(tensors).u64(kvs)
}

// info writes one tensor info.
func (e *ggufEnc) info(name string, dims []uint64, typ uint32, off uint64) *ggufEnc {
	e.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		e.u64(d)
	}
	return e.u32(typ).u64(off)
}

// pad appends zeros to a multiple of align.
func (e *ggufEnc) pad(align int) *ggufEnc {
	for len(e.b)%align != 0 {
		e.b = append(e.b, 0)
	}
	return e
}

type ggTensor struct {
	name string
	dims []uint64
	typ  uint32
	size uint64 // bytes, worked out by hand from ggml's block sizes
}

// ggFile is a written GGUF file and where its parts lie.
type ggFile struct {
	data      []byte
	dataStart int64
	offs      map[string]int64 // absolute
}

// writeGGUF writes a v3 file with some metadata of every kind (so the
// parser must skip them), tensors laid out in order at align.
func writeGGUF(tb testing.TB, align uint32, tensors ...ggTensor) ggFile {
	tb.Helper()
	e := &ggufEnc{}
	nKV := uint64(6)
	if align != ggufDefaultAlignment {
		nKV++
	}
	e.head(uint64(len(tensors)), nKV)
	e.str("general.architecture").u32(ggufString).str("llama")
	e.str("llama.block_count").u32(ggufUint32).u32(2)
	e.str("llama.rope.freq_base").u32(ggufFloat32).u32(math.Float32bits(10000))
	e.str("general.alignmenx").u32(ggufUint64).u64(7) // as long as the real key
	e.str("tokenizer.ggml.tokens").u32(ggufArray).u32(ggufString).u64(3).str("<s>").str("</s>").str("hello")
	e.str("tokenizer.ggml.scores").u32(ggufArray).u32(ggufFloat64).u64(2).u64(0).u64(0)
	if align != ggufDefaultAlignment {
		e.str("general.alignment").u32(ggufUint32).u32(align)
	}
	var off uint64
	offs := make([]uint64, len(tensors))
	for i, t := range tensors {
		offs[i] = off
		e.info(t.name, t.dims, t.typ, off)
		off = (off + t.size + uint64(align) - 1) / uint64(align) * uint64(align)
	}
	e.pad(int(align))
	g := ggFile{dataStart: int64(len(e.b)), offs: map[string]int64{}}
	for i, t := range tensors {
		g.offs[t.name] = g.dataStart + int64(offs[i])
		e.b = append(e.b, make([]byte, int(g.dataStart)+int(offs[i])-len(e.b))...)
		for j := range t.size {
			e.b = append(e.b, byte(j))
		}
	}
	g.data = e.b
	return g
}

// llamaTensors is a small Llama in llama.cpp's order, of mixed types.
var llamaTensors = []ggTensor{
	{"token_embd.weight", []uint64{64, 4}, 8, 4 * 2 * 34},      // Q8_0: 2 blocks of 34 per row
	{"blk.0.attn_norm.weight", []uint64{64}, 0, 64 * 4},        // F32
	{"blk.0.attn_q.weight", []uint64{256, 2}, 12, 2 * 144},     // Q4_K
	{"blk.0.ffn_down.weight", []uint64{256, 3}, 14, 3 * 210},   // Q6_K
	{"blk.1.attn_norm.weight", []uint64{64}, 1, 64 * 2},        // F16
	{"blk.1.attn_q.weight", []uint64{32, 5}, 2, 5 * 18},        // Q4_0
	{"blk.1.ffn_down.weight", []uint64{7, 3}, 30, 7 * 3 * 2},   // BF16
	{"output_norm.weight", []uint64{64}, 0, 64 * 4},            // F32
	{"output.weight", []uint64{64, 4}, 8, 4 * 2 * 34},          // Q8_0
	{"rope_freqs.weight", []uint64{32}, 0, 32 * 4},             // F32, not a layer
	{"blk.0.ffn_gate.weight", []uint64{1, 1, 1, 1}, 24, 1 * 1}, // I8, 4 dims
}

func TestGGUFParse(t *testing.T) {
	for _, align := range []uint32{32, 64, 8} {
		t.Run(fmt.Sprint("align ", align), func(t *testing.T) {
			g := writeGGUF(t, align, llamaTensors...)
			hdr, ts, err := parseGGUF(newStrict(t, g.data), int64(len(g.data)), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if hdr != g.dataStart {
				t.Errorf("data start %d, want %d", hdr, g.dataStart)
			}
			if len(ts) != len(llamaTensors) {
				t.Fatalf("%d tensors, want %d", len(ts), len(llamaTensors))
			}
			for i, want := range llamaTensors {
				if got := ts[i]; got.Name != want.name || got.Offset != g.offs[want.name] || got.Length != int64(want.size) || fmt.Sprint(got.Shape) != fmt.Sprint(want.dims) || got.DType != ggmlTypes[want.typ].name {
					t.Errorf("tensor %d = %+v, want %s at %d, %d bytes", i, got, want.name, g.offs[want.name], want.size)
				}
			}
		})
	}
}

// A tensor of a type ggml's table lacks runs to the next tensor, or to the
// end of the data for the last one.
func TestGGUFUnknownTypeBoundedByNeighbours(t *testing.T) {
	g := writeGGUF(t, 32,
		ggTensor{"blk.0.a", []uint64{100}, 99, 40}, // unknown type 99, 40 bytes → padded to 64
		ggTensor{"blk.0.b", []uint64{8}, 0, 32},
		ggTensor{"blk.1.c", []uint64{3}, 1000, 10},
	)
	_, ts, err := parseGGUF(newStrict(t, g.data), int64(len(g.data)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []tensorRange{
		{"blk.0.a", g.dataStart, 64},
		{"blk.0.b", g.dataStart + 64, 32},
		{"blk.1.c", g.dataStart + 96, 10},
	}
	if fmt.Sprint(ranges(ts)) != fmt.Sprint(want) {
		t.Errorf("tensors %v, want %v", ranges(ts), want)
	}
}

func TestGGUFNoTensors(t *testing.T) {
	// llama.cpp's vocab-only files: a header and nothing after it.
	data := (&ggufEnc{}).head(0, 1).str("general.architecture").u32(ggufString).str("llama").b
	hdr, ts, err := parseGGUF(newStrict(t, data), int64(len(data)), 1<<20)
	if err != nil || hdr != int64(len(data)) || len(ts) != 0 {
		t.Fatalf("got %d, %v, %v; want the whole file as header", hdr, ts, err)
	}
}

func TestGGUFRejects(t *testing.T) {
	e := func() *ggufEnc { return &ggufEnc{} }
	one := func(typ uint32, dims []uint64, off uint64) []byte { // one tensor, 64 data bytes
		return e().head(1, 0).info("w", dims, typ, off).pad(32).raw(make([]byte, 64)...).b
	}
	tests := []struct {
		name string
		data []byte
		size int64 // the size the file claims; 0: len(data)
		max  int64 // MaxHeader; 0: 1 MiB
		want string
	}{
		{"empty", nil, 0, 0, "beyond the end"},
		{"bad magic", e().raw([]byte("GGML")...).u32(3).u64(0).u64(0).b, 0, 0, "bad magic"},
		{"version 1", e().raw([]byte("GGUF")...).u32(1).u64(0).u64(0).b, 0, 0, "version 1"},
		{"big-endian", e().raw([]byte("GGUF")...).u32(3 << 24).u64(0).u64(0).b, 0, 0, "big-endian"},
		{"huge tensor count", e().head(1<<62, 0).b, 0, 0, "cannot fit"},
		{"max tensor count", e().head(math.MaxUint64, 0).b, 0, 0, "cannot fit"},
		{"huge KV count", e().head(0, 1<<60).b, 0, 0, "cannot fit"},
		{"key length beyond file", e().head(0, 1).u64(1 << 40).raw([]byte("general")...).b, 0, 0, "beyond the end"},
		{"key length max", e().head(0, 1).u64(math.MaxUint64).u64(0).b, 0, 0, "beyond the end"},
		{"string value beyond file", e().head(0, 1).str("k").u32(ggufString).u64(1 << 50).b, 0, 0, "beyond the end"},
		{"unknown value type", e().head(0, 1).str("k").u32(13).u64(0).b, 0, 0, "unknown value type 13"},
		{"nested array", e().head(0, 1).str("k").u32(ggufArray).u32(ggufArray).u64(1).b, 0, 0, "not supported"},
		{"array count huge", e().head(0, 1).str("k").u32(ggufArray).u32(ggufUint64).u64(1 << 61).b, 0, 0, "cannot fit"},
		{"string array count huge", e().head(0, 1).str("k").u32(ggufArray).u32(ggufString).u64(1 << 61).b, 0, 0, "cannot fit"},
		{"alignment not uint32", e().head(0, 1).str("general.alignment").u32(ggufUint64).u64(64).b, 0, 0, "want uint32"},
		{"alignment not a power of two", e().head(0, 1).str("general.alignment").u32(ggufUint32).u32(48).b, 0, 0, "power of two"},
		{"alignment zero", e().head(0, 1).str("general.alignment").u32(ggufUint32).u32(0).b, 0, 0, "power of two"},
		{"tensor name too long", e().head(1, 0).u64(1 << 20).b, 1 << 30, 0, "exceeds"},
		{"too many dims", e().head(1, 0).info("w", []uint64{1, 1, 1, 1, 1}, 0, 0).b, 0, 0, "5 dims"},
		{"tensor offset beyond file", one(0, []uint64{4}, 1<<40), 0, 0, "past the"},
		{"tensor offset max", one(0, []uint64{4}, math.MaxUint64-31), 0, 0, "past the"},
		{"tensor runs past the end", one(0, []uint64{17}, 0), 0, 0, "runs past"},
		{"unaligned offset", one(0, []uint64{4}, 4), 0, 0, "aligned"},
		{"shape overflows", one(0, []uint64{1 << 32, 1 << 32, 1 << 32}, 0), 0, 0, "overflows"},
		{"size overflows", one(0, []uint64{1 << 62}, 0), 0, 0, "overflows"},
		{"partial block", one(8, []uint64{33}, 0), 0, 0, "multiple"},
		{"overlapping", e().head(2, 0).info("a", []uint64{16}, 0, 0).info("b", []uint64{16}, 0, 32).pad(32).raw(make([]byte, 96)...).b, 0, 0, "overlap"},
		{"data start past the end", e().head(1, 0).info("w", []uint64{0}, 0, 0).b, 0, 0, "past the end"},
		{"header over MaxHeader", e().head(0, 1).str("k").u32(ggufString).str(strings.Repeat("x", 100)).b, 0, 64, "header limit"},
		{"truncated tensor info", e().head(1, 0).str("w").u32(2).u64(4).u64(4).b, 0, 0, "beyond the end"},
		// Lengths that fit what the file claims (1 GiB) but not what it
		// holds must fail on reading, having allocated nothing big.
		{"claimed key not there", e().head(0, 1).u64(50 << 20).b, 1 << 30, 100 << 20, "unexpected EOF"},
		{"claimed string array not there", e().head(0, 1).str("k").u32(ggufArray).u32(ggufString).u64(10 << 20).b, 1 << 30, 100 << 20, "unexpected EOF"},
		{"claimed tensors not there", e().head(ggufMaxTensors, ggufMaxKV).b, 1 << 30, 100 << 20, "unexpected EOF"},
		// Counts the bytes would allow but no real file has.
		{"too many tensors", e().head(ggufMaxTensors+1, 0).b, 1 << 30, 100 << 20, "more than"},
		{"too many keys", e().head(0, ggufMaxKV+1).b, 1 << 30, 100 << 20, "more than"},
		{"array over the limit", e().head(0, 1).str("k").u32(ggufArray).u32(ggufUint8).u64(ggufMaxArray + 1).b, 1 << 30, 100 << 20, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newStrict(t, tt.data)
			if tt.size != 0 {
				r.size = tt.size
			}
			if tt.max == 0 {
				tt.max = 1 << 20
			}
			var err error
			alloc := allocated(func() { _, _, err = parseGGUF(r, r.size, tt.max) })
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
	f.Add(writeGGUF(f, 32, llamaTensors...).data)
	f.Add(writeGGUF(f, 64, llamaTensors[:3]...).data)
	f.Add(writeGGUF(f, 32, ggTensor{"a", []uint64{100}, 99, 40}, ggTensor{"b", []uint64{8}, 0, 32}).data)
	f.Add((&ggufEnc{}).head(0, 0).b)
	f.Add((&ggufEnc{}).head(1<<62, 1<<62).b)
	f.Add((&ggufEnc{}).head(0, 1).str("k").u32(ggufArray).u32(ggufString).u64(1 << 61).b)
	f.Add((&ggufEnc{}).head(2, 0).info("a", []uint64{16}, 0, 0).info("b", []uint64{16}, 0, 32).pad(32).raw(make([]byte, 96)...).b)
	f.Add([]byte("GGUF"))
	f.Add(hostileGGUF("tensors", 4<<10))
	f.Add(hostileGGUF("metadata", 4<<10))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		var hdr int64
		var ts []Tensor
		var err error
		alloc := allocated(func() { hdr, ts, err = parseGGUF(newStrict(t, data), size, 1<<20) })
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
	e := &ggufEnc{}
	switch kind {
	case "tensors":
		count := min(uint64(n/32), ggufMaxTensors)
		e.head(count, 0)
		for i := range count {
			e.info(fmt.Sprintf("%x", i), []uint64{0}, 0, 0)
		}
	case "metadata":
		e.head(0, 3)
		e.str("k1").u32(ggufString).str(strings.Repeat("s", n/3))
		e.str("k2").u32(ggufArray).u32(ggufString).u64(uint64(n / 3 / 9))
		for range n / 3 / 9 {
			e.str("a")
		}
		e.str("k3").u32(ggufArray).u32(ggufUint64).u64(uint64(n / 3 / 8))
		e.raw(make([]byte, n/3/8*8)...)
	}
	return e.pad(32).b
}

// A maximal hostile header is parsed within a small multiple of its size,
// and keeps only names and offsets.
func TestGGUFHostileHeaderMemory(t *testing.T) {
	for _, kind := range []string{"tensors", "metadata"} {
		t.Run(kind, func(t *testing.T) {
			data := hostileGGUF(kind, 8<<20)
			var ts []Tensor
			var err error
			alloc := allocated(func() { _, ts, err = parseGGUF(newStrict(t, data), int64(len(data)), 100<<20) })
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
