package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"

	"github.com/modelfs/modelfs/modelformat"
)

// A GGUF v3 file (llama.cpp's format) is, all little-endian:
//
//	magic "GGUF", version uint32, tensor count uint64, KV count uint64
//	KV pairs:     key (uint64 length + bytes), value type uint32, value
//	tensor infos: name, n_dims uint32, dims uint64 × n_dims (innermost
//	              first), ggml type uint32, offset uint64 (from data start)
//	padding to general.alignment (default 32), then the tensor data, each
//	tensor starting at a multiple of the alignment.
//
// The bench writes one so that the model it mounts has both layouts a
// loader meets, and parses it back (with modelformat) to find the tensors
// to touch.

const (
	ggufMagic            = "GGUF"
	ggufVersion          = 3
	ggufDefaultAlignment = 32
)

// GGUF metadata value types.
const (
	ggufUint8   = 0
	ggufInt8    = 1
	ggufUint16  = 2
	ggufInt16   = 3
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufBool    = 7
	ggufString  = 8
	ggufArray   = 9
	ggufUint64  = 10
	ggufInt64   = 11
	ggufFloat64 = 12
)

// ggml tensor types the bench writes, with their element sizes.
const (
	ggmlF32  = 0
	ggmlF16  = 1
	ggmlBF16 = 30
)

var ggmlTypeSize = map[uint32]uint64{ggmlF32: 4, ggmlF16: 2, ggmlBF16: 2}

// ggufKV is one metadata pair. Value is one of string, uint32, int32,
// uint64, float32, bool, []string, []float32 or []int32 when writing; the
// parser also returns the other scalar types, and arrays as []any.
type ggufKV struct {
	Key   string
	Value any
}

// ggufTensor is one tensor info. Dims are in GGUF order (innermost first:
// a Hugging Face [out, in] weight is [in, out] here). Offset is relative to
// the start of the data section.
type ggufTensor struct {
	Name   string
	Dims   []uint64
	Type   uint32
	Offset uint64
}

// Size is the tensor's data size in bytes.
func (t ggufTensor) Size() uint64 {
	n := ggmlTypeSize[t.Type]
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// ggufFile is a parsed GGUF header.
type ggufFile struct {
	Version uint32
	// Metadata holds the values of the keys parseGGUF was asked for.
	Metadata  map[string]any
	Tensors   []ggufTensor
	Alignment uint64
	// DataStart is the absolute offset of the data section.
	DataStart int64
}

// Get returns the value of key, or nil.
func (g *ggufFile) Get(key string) any { return g.Metadata[key] }

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// writeGGUF writes a GGUF v3 file to w. The tensors' Offset fields are
// ignored and assigned (aligned to the alignment, in the given order); the
// laid-out infos are returned. fill is called with each tensor's index and
// a buffer to fill with (part of) its bytes, in order; it may be called
// several times per tensor.
func writeGGUF(w io.Writer, kvs []ggufKV, tensors []ggufTensor, fill func(i int, off uint64, p []byte)) ([]ggufTensor, error) {
	align := uint64(ggufDefaultAlignment)
	for _, kv := range kvs {
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.(uint32)
			if !ok || a == 0 || a&(a-1) != 0 {
				return nil, fmt.Errorf("gguf: general.alignment must be a uint32 power of two, got %v", kv.Value)
			}
			align = uint64(a)
		}
	}
	out := make([]ggufTensor, len(tensors))
	var off uint64
	for i, t := range tensors {
		if _, ok := ggmlTypeSize[t.Type]; !ok {
			return nil, fmt.Errorf("gguf: tensor %s: unsupported ggml type %d", t.Name, t.Type)
		}
		t.Offset = alignUp(off, align)
		out[i] = t
		off = t.Offset + t.Size()
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	e := &ggufEncoder{w: bw}
	e.raw([]byte(ggufMagic))
	e.u32(ggufVersion)
	e.u64(uint64(len(out)))
	e.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		e.str(kv.Key)
		if err := e.value(kv.Value); err != nil {
			return nil, fmt.Errorf("gguf: key %s: %w", kv.Key, err)
		}
	}
	for _, t := range out {
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(t.Type)
		e.u64(t.Offset)
	}
	e.pad(align)
	dataStart := e.n
	const chunk = 4 << 20
	buf := make([]byte, chunk)
	for i, t := range out {
		e.pad(align) // zero bytes up to this tensor's aligned offset
		if e.err == nil && e.n-dataStart != t.Offset {
			return nil, fmt.Errorf("gguf: internal error: tensor %s at %d, want %d", t.Name, e.n-dataStart, t.Offset)
		}
		for done := uint64(0); done < t.Size(); {
			p := buf[:min(chunk, t.Size()-done)]
			fill(i, done, p)
			e.raw(p)
			done += uint64(len(p))
		}
	}
	if e.err != nil {
		return nil, fmt.Errorf("gguf: writing: %w", e.err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("gguf: writing: %w", err)
	}
	return out, nil
}

// ggufEncoder writes little-endian fields and remembers the first error.
type ggufEncoder struct {
	w   io.Writer
	n   uint64
	err error
	b   [8]byte
}

func (e *ggufEncoder) raw(p []byte) {
	if e.err != nil {
		return
	}
	n, err := e.w.Write(p)
	e.n += uint64(n)
	e.err = err
}

func (e *ggufEncoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.b[:4], v); e.raw(e.b[:4]) }
func (e *ggufEncoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.b[:8], v); e.raw(e.b[:8]) }
func (e *ggufEncoder) str(s string) { e.u64(uint64(len(s))); e.raw([]byte(s)) }

func (e *ggufEncoder) pad(align uint64) {
	if k := alignUp(e.n, align) - e.n; k > 0 {
		e.raw(make([]byte, k))
	}
}

func (e *ggufEncoder) value(v any) error {
	switch v := v.(type) {
	case string:
		e.u32(ggufString)
		e.str(v)
	case uint32:
		e.u32(ggufUint32)
		e.u32(v)
	case int32:
		e.u32(ggufInt32)
		e.u32(uint32(v))
	case uint64:
		e.u32(ggufUint64)
		e.u64(v)
	case float32:
		e.u32(ggufFloat32)
		e.u32(math.Float32bits(v))
	case bool:
		e.u32(ggufBool)
		if v {
			e.raw([]byte{1})
		} else {
			e.raw([]byte{0})
		}
	case []string:
		e.u32(ggufArray)
		e.u32(ggufString)
		e.u64(uint64(len(v)))
		for _, s := range v {
			e.str(s)
		}
	case []float32:
		e.u32(ggufArray)
		e.u32(ggufFloat32)
		e.u64(uint64(len(v)))
		for _, f := range v {
			e.u32(math.Float32bits(f))
		}
	case []int32:
		e.u32(ggufArray)
		e.u32(ggufInt32)
		e.u64(uint64(len(v)))
		for _, x := range v {
			e.u32(uint32(x))
		}
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	return nil
}

// ggufKeys are the metadata keys parseGGUF keeps by default: those the
// bench and its tests look at.
var ggufKeys = []string{
	"general.architecture", "general.alignment", "general.name",
	"llama.block_count", "llama.embedding_length", "tokenizer.ggml.tokens",
}

// parseGGUF reads the header of a GGUF file of the given size with
// modelformat, which checks that every tensor lies, aligned, inside the
// file, and keeps the values of keys (ggufKeys if none are given). Only
// the tensor types the bench writes are accepted, since it sizes them
// itself.
func parseGGUF(r io.ReaderAt, size int64, keys ...string) (*ggufFile, error) {
	if len(keys) == 0 {
		keys = ggufKeys
	}
	h, err := modelformat.ReadGGUF(r, size, modelformat.Options{GGUFKeys: keys})
	if err != nil {
		return nil, err
	}
	g := &ggufFile{Version: h.Version, Alignment: uint64(h.Alignment), DataStart: h.DataStart, Metadata: h.Metadata}
	for _, t := range h.Tensors {
		typ, ok := modelformat.GGMLType(t.DType)
		if _, sized := ggmlTypeSize[typ]; !ok || !sized {
			return nil, fmt.Errorf("gguf: tensor %s: unsupported ggml type %s", t.Name, t.DType)
		}
		g.Tensors = append(g.Tensors, ggufTensor{Name: t.Name, Dims: t.Shape, Type: typ, Offset: uint64(t.Offset - h.DataStart)})
	}
	return g, nil
}

// llamaGGUF describes the Llama-style GGUF model the bench writes: bf16
// matrices and f32 norms, named and shaped as llama.cpp's converter does.
type llamaGGUF struct {
	Hidden, Intermediate, Layers, Heads, KVHeads, Vocab int
}

// planLlamaGGUF picks dimensions whose tensors add up to about target bytes.
func planLlamaGGUF(target int64) llamaGGUF {
	vocab := 32000
	if target < 64<<20 {
		vocab = 1024 // a tiny model cannot afford a full vocabulary
	}
	layers := int(min(max(target/(32<<20), 2), 32))
	best := llamaGGUF{}
	bestErr := int64(math.MaxInt64)
	for h := 64; h <= 1<<14; h += 64 {
		c := newLlamaGGUF(h, layers, vocab)
		diff := c.bytes() - target
		if diff < 0 {
			diff = -diff
		}
		if diff < bestErr {
			best, bestErr = c, diff
		}
		if c.bytes() > target {
			break
		}
	}
	return best
}

func newLlamaGGUF(h, layers, vocab int) llamaGGUF {
	in := max((h*43/16+128)/256*256, 256) // Llama's MLP ratio, as modelgen
	heads := max(h/64, 4)
	return llamaGGUF{Hidden: h, Intermediate: in, Layers: layers, Heads: heads, KVHeads: max(heads/4, 1), Vocab: vocab}
}

func (c llamaGGUF) bytes() int64 {
	var n uint64
	for _, t := range c.tensors() {
		n += t.Size()
	}
	return int64(n)
}

// tensors lists the tensor infos in llama.cpp's order (Offset unset).
func (c llamaGGUF) tensors() []ggufTensor {
	h, in, v := uint64(c.Hidden), uint64(c.Intermediate), uint64(c.Vocab)
	kv := h * uint64(c.KVHeads) / uint64(c.Heads)
	m := func(name string, inner, outer uint64) ggufTensor {
		return ggufTensor{Name: name, Dims: []uint64{inner, outer}, Type: ggmlBF16}
	}
	norm := func(name string) ggufTensor { return ggufTensor{Name: name, Dims: []uint64{h}, Type: ggmlF32} }
	out := []ggufTensor{m("token_embd.weight", h, v)}
	for i := range c.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		out = append(out,
			norm(p+"attn_norm.weight"),
			m(p+"attn_q.weight", h, h),
			m(p+"attn_k.weight", h, kv),
			m(p+"attn_v.weight", h, kv),
			m(p+"attn_output.weight", h, h),
			norm(p+"ffn_norm.weight"),
			m(p+"ffn_gate.weight", h, in),
			m(p+"ffn_up.weight", h, in),
			m(p+"ffn_down.weight", in, h),
		)
	}
	return append(out, norm("output_norm.weight"), m("output.weight", h, v))
}

// metadata is the KV section: what llama.cpp needs to load a llama model,
// vocabulary included (which makes the header a realistic few hundred KiB).
func (c llamaGGUF) metadata(name string) []ggufKV {
	tokens := make([]string, c.Vocab)
	scores := make([]float32, c.Vocab)
	types := make([]int32, c.Vocab)
	for i := range tokens {
		tokens[i], scores[i], types[i] = fmt.Sprintf("<0x%04X>", i), -float32(i), 1
	}
	tokens[0], tokens[1], tokens[2] = "<unk>", "<s>", "</s>"
	types[0], types[1], types[2] = 2, 3, 3
	return []ggufKV{
		{"general.architecture", "llama"},
		{"general.name", name},
		{"general.alignment", uint32(ggufDefaultAlignment)},
		{"general.file_type", uint32(32)}, // LLAMA_FTYPE_MOSTLY_BF16
		{"llama.context_length", uint32(4096)},
		{"llama.embedding_length", uint32(c.Hidden)},
		{"llama.block_count", uint32(c.Layers)},
		{"llama.feed_forward_length", uint32(c.Intermediate)},
		{"llama.attention.head_count", uint32(c.Heads)},
		{"llama.attention.head_count_kv", uint32(c.KVHeads)},
		{"llama.rope.dimension_count", uint32(c.Hidden / c.Heads)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"llama.vocab_size", uint32(c.Vocab)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
	}
}

// fillTensor writes deterministic weights: small bf16 values for matrices
// (random bits would be NaNs and infinities, which no real file holds) and
// 1.0 for f32 norms. seed separates tensors; off is the byte offset within
// the tensor, so chunks can be filled independently.
func fillTensor(t ggufTensor, seed uint64, off uint64, p []byte) {
	if t.Type == ggmlF32 {
		for i := 0; i+4 <= len(p); i += 4 {
			binary.LittleEndian.PutUint32(p[i:], math.Float32bits(1))
		}
		return
	}
	s := seed ^ (off * 0x9E3779B97F4A7C15)
	for i := 0; i+8 <= len(p); i += 8 {
		s += 0xa0761d6478bd642f
		hi, lo := bits.Mul64(s, s^0xe7037ed1a0b428db) // wyrand
		r := hi ^ lo
		var v uint64
		for k := range 4 {
			x := uint16(r >> (16 * k))
			// sign, exponent 117..123 (about 2^-10 to 2^-4), 7 mantissa bits
			bf := x&0x8000 | (117+(x>>7)%7)<<7 | x&0x7f
			v |= uint64(bf) << (16 * k)
		}
		binary.LittleEndian.PutUint64(p[i:], v)
	}
	for i := len(p) &^ 7; i < len(p); i++ {
		p[i] = 0 // tensor sizes are multiples of 8; this is only a guard
	}
}

// writeLlamaGGUF writes a Llama-style bf16 GGUF of about target bytes to
// path and returns its tensors.
func writeLlamaGGUF(path string, target int64, seed uint64) ([]ggufTensor, error) {
	c := planLlamaGGUF(target)
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	infos := c.tensors()
	ts, err := writeGGUF(f, c.metadata("modelfs-bench-llama"), infos, func(i int, off uint64, p []byte) {
		fillTensor(infos[i], seed+uint64(i)*0x100000001b3, off, p)
	})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return ts, nil
}
