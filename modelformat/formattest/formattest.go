package formattest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
)

// SafetensorsTensor is one tensor to write.
type SafetensorsTensor struct {
	Name  string
	DType string
	Shape []int64
}

// SafetensorsFile is a written safetensors file and where its parts lie.
type SafetensorsFile struct {
	Data    []byte
	Header  int64               // 8 + header length
	Offsets map[string][2]int64 // absolute [begin, end) of each tensor
}

var dtypeBytes = map[string]int64{"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "U8": 1, "F64": 8}

// WriteSafetensors writes tensors in the given order, with the header
// listing them in the same order (a map would sort them) and padded with
// spaces to 8 bytes as the reference writer does.
func WriteSafetensors(tb testing.TB, tensors ...SafetensorsTensor) SafetensorsFile {
	tb.Helper()
	var hdr strings.Builder
	hdr.WriteString(`{"__metadata__":{"format":"pt"}`)
	f := SafetensorsFile{Offsets: map[string][2]int64{}}
	var off int64
	for _, t := range tensors {
		n, ok := dtypeBytes[t.DType]
		if !ok {
			tb.Fatalf("test writer lacks dtype %s", t.DType)
		}
		for _, d := range t.Shape {
			n *= d
		}
		name, _ := json.Marshal(t.Name)
		shape, _ := json.Marshal(t.Shape)
		fmt.Fprintf(&hdr, `,%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, t.DType, shape, off, off+n)
		f.Offsets[t.Name] = [2]int64{off, off + n}
		off += n
	}
	hdr.WriteString("}")
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	f.Header = 8 + int64(hdr.Len())
	for k, o := range f.Offsets {
		f.Offsets[k] = [2]int64{o[0] + f.Header, o[1] + f.Header}
	}
	f.Data = binary.LittleEndian.AppendUint64(nil, uint64(hdr.Len()))
	f.Data = append(f.Data, hdr.String()...)
	for i := range off {
		f.Data = append(f.Data, byte(i))
	}
	return f
}

// RawSafetensors is header as the JSON, followed by dataLen bytes.
func RawSafetensors(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// WithLength returns a copy of a safetensors file with its header length
// replaced.
func WithLength(b []byte, n uint64) []byte {
	b = append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(b, n)
	return b
}

// GGUF metadata value types and the default alignment.
const (
	GGUFUint32           = 4
	GGUFFloat32          = 6
	GGUFString           = 8
	GGUFArray            = 9
	GGUFUint64           = 10
	GGUFFloat64          = 12
	GGUFDefaultAlignment = 32
)

// GGUFEncoder builds GGUF bytes field by field, malformed ones included.
type GGUFEncoder struct{ B []byte }

// Raw appends bytes as they are.
func (e *GGUFEncoder) Raw(p ...byte) *GGUFEncoder { e.B = append(e.B, p...); return e }

// U32 appends a little-endian uint32.
func (e *GGUFEncoder) U32(v uint32) *GGUFEncoder {
	e.B = binary.LittleEndian.AppendUint32(e.B, v)
	return e
}

// U64 appends a little-endian uint64.
func (e *GGUFEncoder) U64(v uint64) *GGUFEncoder {
	e.B = binary.LittleEndian.AppendUint64(e.B, v)
	return e
}

// Str appends a GGUF string: its length, then its bytes.
func (e *GGUFEncoder) Str(s string) *GGUFEncoder { return e.U64(uint64(len(s))).Raw([]byte(s)...) }

// Head appends magic, version 3 and the two counts.
func (e *GGUFEncoder) Head(tensors, kvs uint64) *GGUFEncoder {
	return e.Raw([]byte("GGUF")...).U32(3).U64(tensors).U64(kvs)
}

// Info appends one tensor info.
func (e *GGUFEncoder) Info(name string, dims []uint64, typ uint32, off uint64) *GGUFEncoder {
	e.Str(name).U32(uint32(len(dims)))
	for _, d := range dims {
		e.U64(d)
	}
	return e.U32(typ).U64(off)
}

// Pad appends zeros to a multiple of align.
func (e *GGUFEncoder) Pad(align int) *GGUFEncoder {
	for len(e.B)%align != 0 {
		e.B = append(e.B, 0)
	}
	return e
}

// GGUFTensor is one tensor to write.
type GGUFTensor struct {
	Name string
	Dims []uint64
	Type uint32
	Size uint64 // bytes, worked out by hand from ggml's block sizes
}

// GGUFFile is a written GGUF file and where its parts lie.
type GGUFFile struct {
	Data      []byte
	DataStart int64
	Offsets   map[string]int64 // absolute
}

// WriteGGUF writes a v3 file with some metadata of every kind (so a
// parser must skip them), tensors laid out in order at align.
func WriteGGUF(tb testing.TB, align uint32, tensors ...GGUFTensor) GGUFFile {
	tb.Helper()
	e := &GGUFEncoder{}
	nKV := uint64(6)
	if align != GGUFDefaultAlignment {
		nKV++
	}
	e.Head(uint64(len(tensors)), nKV)
	e.Str("general.architecture").U32(GGUFString).Str("llama")
	e.Str("llama.block_count").U32(GGUFUint32).U32(2)
	e.Str("llama.rope.freq_base").U32(GGUFFloat32).U32(math.Float32bits(10000))
	e.Str("general.alignmenx").U32(GGUFUint64).U64(7) // as long as the real key
	e.Str("tokenizer.ggml.tokens").U32(GGUFArray).U32(GGUFString).U64(3).Str("<s>").Str("</s>").Str("hello")
	e.Str("tokenizer.ggml.scores").U32(GGUFArray).U32(GGUFFloat64).U64(2).U64(0).U64(0)
	if align != GGUFDefaultAlignment {
		e.Str("general.alignment").U32(GGUFUint32).U32(align)
	}
	var off uint64
	offs := make([]uint64, len(tensors))
	for i, t := range tensors {
		offs[i] = off
		e.Info(t.Name, t.Dims, t.Type, off)
		off = (off + t.Size + uint64(align) - 1) / uint64(align) * uint64(align)
	}
	e.Pad(int(align))
	g := GGUFFile{DataStart: int64(len(e.B)), Offsets: map[string]int64{}}
	for i, t := range tensors {
		g.Offsets[t.Name] = g.DataStart + int64(offs[i])
		e.B = append(e.B, make([]byte, int(g.DataStart)+int(offs[i])-len(e.B))...)
		for j := range t.Size {
			e.B = append(e.B, byte(j))
		}
	}
	g.Data = e.B
	return g
}

// LlamaGGUFTensors is a small Llama in llama.cpp's order, of mixed types.
var LlamaGGUFTensors = []GGUFTensor{
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
