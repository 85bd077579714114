package prefetch

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
)

// Writers of the test files the planner reads; modelformat's tests check
// the parsers themselves.

// GGUF metadata value types and the default alignment.
const (
	ggufUint32           = 4
	ggufFloat32          = 6
	ggufString           = 8
	ggufArray            = 9
	ggufUint64           = 10
	ggufFloat64          = 12
	ggufDefaultAlignment = 32
)

type stTensor struct {
	name  string
	dtype string
	shape []int64
}

// stFile is a written safetensors file and where its parts lie.
type stFile struct {
	data []byte
	hdr  int64               // 8 + header length
	offs map[string][2]int64 // absolute [begin, end) of each tensor
}

var stTestBytes = map[string]int64{"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "U8": 1, "F64": 8}

// writeSafetensors writes tensors in the given order, with the header
// listing them in the same order (a map would sort them) and padded with
// spaces to 8 bytes as the reference writer does.
func writeSafetensors(tb testing.TB, tensors ...stTensor) stFile {
	tb.Helper()
	var hdr strings.Builder
	hdr.WriteString(`{"__metadata__":{"format":"pt"}`)
	f := stFile{offs: map[string][2]int64{}}
	var off int64
	for _, t := range tensors {
		n, ok := stTestBytes[t.dtype]
		if !ok {
			tb.Fatalf("test writer lacks dtype %s", t.dtype)
		}
		for _, d := range t.shape {
			n *= d
		}
		name, _ := json.Marshal(t.name)
		shape, _ := json.Marshal(t.shape)
		fmt.Fprintf(&hdr, `,%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, t.dtype, shape, off, off+n)
		f.offs[t.name] = [2]int64{off, off + n}
		off += n
	}
	hdr.WriteString("}")
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	f.hdr = 8 + int64(hdr.Len())
	for k, o := range f.offs {
		f.offs[k] = [2]int64{o[0] + f.hdr, o[1] + f.hdr}
	}
	f.data = binary.LittleEndian.AppendUint64(nil, uint64(hdr.Len()))
	f.data = append(f.data, hdr.String()...)
	for i := range off {
		f.data = append(f.data, byte(i))
	}
	return f
}

// rawSafetensors is header as the JSON, followed by dataLen bytes.
func rawSafetensors(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// withLength replaces the header length of a file.
func withLength(b []byte, n uint64) []byte {
	b = append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(b, n)
	return b
}

// Plan wraps a rejection with the file's path.
func TestSafetensorsRejectNamesPath(t *testing.T) {
	data := withLength(writeSafetensors(t, stTensor{name: "w", dtype: "U8", shape: []int64{4}}).data, 1<<62)
	_, err := Plan([]File{memFile(t, "dir/model.safetensors", data, nil)}, PlanOptions{SmallFile: 1})
	if err == nil || !strings.HasPrefix(err.Error(), "prefetch: plan dir/model.safetensors: safetensors: ") {
		t.Fatalf("error %v does not name the file", err)
	}
}

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

func TestPlanGGUF(t *testing.T) {
	// Header order differs from layer order, as in some converters.
	tensors := []ggTensor{llamaTensors[8], llamaTensors[4], llamaTensors[2], llamaTensors[0], llamaTensors[7], llamaTensors[1]}
	g := writeGGUF(t, 32, tensors...)
	q4 := writeGGUF(t, 32, llamaTensors[0])
	files := []File{
		memFile(t, "model-Q8_0.gguf", g.data, nil),
		memFile(t, "model-Q4_K_M.gguf", q4.data, nil),
		memFile(t, "README.md", []byte("# model"), nil),
	}
	got, err := Plan(files, PlanOptions{SmallFile: 100})
	if err != nil {
		t.Fatal(err)
	}
	tr := func(p string, g ggFile, k int) Range {
		tt := llamaTensors[k]
		return Range{Path: p, Off: g.offs[tt.name], Len: int64(tt.size), Tensor: tt.name}
	}
	// Quantizations in one folder are separate checkpoints, not shards.
	checkRanges(t, got, []Range{
		{Path: "README.md", Len: 7},
		{Path: "model-Q4_K_M.gguf", Len: q4.dataStart},
		tr("model-Q4_K_M.gguf", q4, 0),
		{Path: "model-Q8_0.gguf", Len: g.dataStart},
		tr("model-Q8_0.gguf", g, 0),
		tr("model-Q8_0.gguf", g, 2),
		tr("model-Q8_0.gguf", g, 1),
		tr("model-Q8_0.gguf", g, 4),
		tr("model-Q8_0.gguf", g, 7),
		tr("model-Q8_0.gguf", g, 8),
	})
}

// gguf-split shards are planned as one model.
func TestPlanGGUFSplit(t *testing.T) {
	s1 := writeGGUF(t, 32, llamaTensors[0], llamaTensors[4])
	s2 := writeGGUF(t, 32, llamaTensors[1], llamaTensors[8])
	got, err := Plan([]File{
		memFile(t, "m-00002-of-00002.gguf", s2.data, nil),
		memFile(t, "m-00001-of-00002.gguf", s1.data, nil),
	}, PlanOptions{SmallFile: 1})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.Path+":"+r.Tensor)
	}
	want := []string{
		"m-00001-of-00002.gguf:", "m-00002-of-00002.gguf:",
		"m-00001-of-00002.gguf:token_embd.weight", "m-00002-of-00002.gguf:blk.0.attn_norm.weight",
		"m-00001-of-00002.gguf:blk.1.attn_norm.weight", "m-00002-of-00002.gguf:output.weight",
	}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("plan %q, want %q", names, want)
	}
}
