package pack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// encodeBytes packs data and checks what Encode returns against what it
// wrote.
func encodeBytes(t testing.TB, data []byte, opts EncodeOptions) ([]byte, *Index) {
	t.Helper()
	var buf bytes.Buffer
	ix, err := Encode(context.Background(), &buf, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		t.Fatal(err)
	}
	if ix.PackedSize() != int64(buf.Len()) {
		t.Fatalf("index says %d packed bytes, Encode wrote %d", ix.PackedSize(), buf.Len())
	}
	if ix.SHA256 != sha256.Sum256(data) {
		t.Fatal("the index's sha256 is not the original's")
	}
	return buf.Bytes(), ix
}

// checkRoundTrip reads the original back through a Reader, whole and in
// random ranges, and fails on any difference.
func checkRoundTrip(t *testing.T, packed, want []byte) {
	t.Helper()
	ix, err := ReadIndex(bytes.NewReader(packed), int64(len(packed)))
	if err != nil {
		t.Fatalf("ReadIndex: %v", err)
	}
	r, err := NewReader(bytes.NewReader(packed), ix)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", r.Size(), len(want))
	}
	got := make([]byte, len(want))
	if n, err := r.ReadAt(got, 0); n != len(want) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt of everything: %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the whole file read back differs from the original")
	}
	rng := rand.New(rand.NewPCG(uint64(len(want)), 1))
	for i := range 100 {
		if len(want) == 0 {
			break
		}
		// Mostly reads within a frame or across one boundary, some
		// spanning several frames.
		off := rng.IntN(len(want))
		limit := 64 << 10
		if i%8 == 0 {
			limit = int(3 * ix.FrameSize)
		}
		n := 1 + rng.IntN(min(len(want)-off, limit))
		p := make([]byte, n)
		if k, err := r.ReadAt(p, int64(off)); k != n || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt %d bytes at %d: %d, %v", n, off, k, err)
		}
		if !bytes.Equal(p, want[off:off+n]) {
			t.Fatalf("ReadAt %d bytes at %d differs from the original", n, off)
		}
	}
	if _, err := r.ReadAt(make([]byte, 1), int64(len(want))); err != io.EOF {
		t.Fatalf("ReadAt at the end: %v, want io.EOF", err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ggufTensor is one tensor for writeGGUF: ggml type and dims.
type ggufTensor struct {
	name string
	typ  uint32
	dims []uint64
}

var ggmlSize = map[uint32]uint64{0: 4, 1: 2, 30: 2, 24: 1}

// writeGGUF writes a GGUF v3 file with a few metadata pairs (a string, a
// uint32, an array of strings) and the tensors, laid out in order at the
// default 32-byte alignment, filled from fill. It returns the file and
// each tensor's absolute range.
func writeGGUF(tensors []ggufTensor, fill func(i int, p []byte)) ([]byte, []Span) {
	var b []byte
	u32 := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	u64 := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	str := func(s string) { u64(uint64(len(s))); b = append(b, s...) }
	b = append(b, "GGUF"...)
	u32(3)
	u64(uint64(len(tensors)))
	u64(3)
	str("general.architecture")
	u32(8)
	str("llama")
	str("llama.block_count")
	u32(4)
	u32(2)
	str("tokenizer.ggml.tokens")
	u32(9)
	u32(8)
	u64(3)
	for _, s := range []string{"<s>", "</s>", "hello"} {
		str(s)
	}
	var off uint64
	rel := make([]uint64, len(tensors))
	for i, t := range tensors {
		str(t.name)
		u32(uint32(len(t.dims)))
		n := ggmlSize[t.typ]
		for _, d := range t.dims {
			u64(d)
			n *= d
		}
		u32(t.typ)
		u64(off)
		rel[i] = off
		off = (off + n + 31) / 32 * 32
	}
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	start := uint64(len(b))
	b = append(b, make([]byte, off)...)
	spans := make([]Span, len(tensors))
	for i, t := range tensors {
		n := ggmlSize[t.typ]
		for _, d := range t.dims {
			n *= d
		}
		spans[i] = Span{int64(start + rel[i]), int64(n)}
		fill(i, b[start+rel[i]:start+rel[i]+n])
	}
	return b, spans
}

// normalBF16 fills p with bf16 samples of N(0, 0.02).
func normalBF16(rng *rand.Rand, p []byte) {
	for i := 0; i+1 < len(p); i += 2 {
		f := float32(rng.NormFloat64() * 0.02)
		binary.LittleEndian.PutUint16(p[i:], uint16(math.Float32bits(f)>>16))
	}
}

// normalF16 fills p with fp16 samples of N(0, 0.02), truncated (all are
// normal numbers in fp16's range but for the rare tiny ones, flushed to 0).
func normalF16(rng *rand.Rand, p []byte) {
	for i := 0; i+1 < len(p); i += 2 {
		b := math.Float32bits(float32(rng.NormFloat64() * 0.02))
		exp := int32(b>>23&0xff) - 127 + 15
		h := uint16(b>>16) & 0x8000
		if exp > 0 {
			h |= uint16(exp)<<10 | uint16(b>>13&0x3ff)
		}
		binary.LittleEndian.PutUint16(p[i:], h)
	}
}
