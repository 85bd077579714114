package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// pattern is a fill function whose bytes depend on tensor and offset, so a
// misplaced tensor shows.
func pattern(i int, off uint64, p []byte) {
	for k := range p {
		p[k] = byte(i*37 + int(off) + k*7)
	}
}

func smallGGUF(t *testing.T) ([]byte, []ggufKV, []ggufTensor) {
	t.Helper()
	kvs := []ggufKV{
		{"general.architecture", "llama"},
		{"general.alignment", uint32(32)},
		{"llama.block_count", uint32(2)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"general.size_label", uint64(1 << 40)},
		{"general.quantized", false},
		{"general.offset", int32(-7)},
		{"tokenizer.ggml.tokens", []string{"<unk>", "<s>", "hi"}},
		{"tokenizer.ggml.scores", []float32{0, -1.5}},
		{"tokenizer.ggml.token_type", []int32{2, 3}},
	}
	tensors := []ggufTensor{
		{Name: "token_embd.weight", Dims: []uint64{8, 5}, Type: ggmlBF16},  // 80 bytes
		{Name: "blk.0.attn_norm.weight", Dims: []uint64{3}, Type: ggmlF32}, // 12 bytes: the next needs padding
		{Name: "odd", Dims: []uint64{3, 5}, Type: ggmlF16},                 // 30 bytes
		{Name: "output.weight", Dims: []uint64{8, 5}, Type: ggmlBF16},
	}
	var buf bytes.Buffer
	laid, err := writeGGUF(&buf, kvs, tensors, pattern)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), kvs, laid
}

func TestGGUFRoundTrip(t *testing.T) {
	data, kvs, laid := smallGGUF(t)
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
	}
	g, err := parseGGUF(bytes.NewReader(data), int64(len(data)), keys...)
	if err != nil {
		t.Fatal(err)
	}
	if g.Version != 3 || g.Alignment != 32 || g.DataStart%32 != 0 {
		t.Errorf("version %d alignment %d data start %d", g.Version, g.Alignment, g.DataStart)
	}
	if len(g.Metadata) != len(kvs) {
		t.Fatalf("%d KVs, want %d", len(g.Metadata), len(kvs))
	}
	for _, kv := range kvs {
		want := kv.Value
		// Arrays come back as []any.
		if rv := reflect.ValueOf(want); rv.Kind() == reflect.Slice {
			var w []any
			for j := range rv.Len() {
				w = append(w, rv.Index(j).Interface())
			}
			want = w
		}
		if got := g.Get(kv.Key); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %#v, want %#v", kv.Key, got, want)
		}
	}
	if g.Get("general.architecture") != "llama" {
		t.Errorf("general.architecture = %v", g.Get("general.architecture"))
	}
	if !reflect.DeepEqual(g.Tensors, laid) {
		t.Fatalf("tensors\n%+v\nwant\n%+v", g.Tensors, laid)
	}
	wantOffsets := []uint64{0, 96, 128, 160} // 80 → 96, 96+12 → 128, 128+30 → 160
	var end int64
	for i, ti := range g.Tensors {
		if ti.Offset != wantOffsets[i] {
			t.Errorf("%s at %d, want %d", ti.Name, ti.Offset, wantOffsets[i])
		}
		b := g.DataStart + int64(ti.Offset)
		want := make([]byte, ti.Size())
		pattern(i, 0, want)
		if got := data[b : b+int64(ti.Size())]; !bytes.Equal(got, want) {
			t.Errorf("%s: data differs", ti.Name)
		}
		end = b + int64(ti.Size())
	}
	if end != int64(len(data)) {
		t.Errorf("file is %d bytes, last tensor ends at %d", len(data), end)
	}
	// Padding between tensors is zeros.
	if pad := data[g.DataStart+80 : g.DataStart+96]; !bytes.Equal(pad, make([]byte, 16)) {
		t.Errorf("padding %x", pad)
	}
}

// TestGGUFLayoutBytes checks the encoding against the format as written
// down, not against the parser, so that writer and parser cannot agree on
// a mistake.
func TestGGUFLayoutBytes(t *testing.T) {
	data, kvs, laid := smallGGUF(t)
	var want bytes.Buffer
	le := func(v any) { binary.Write(&want, binary.LittleEndian, v) }
	str := func(s string) { le(uint64(len(s))); want.WriteString(s) }
	want.WriteString("GGUF")
	le(uint32(3))
	le(uint64(len(laid)))
	le(uint64(len(kvs)))
	str("general.architecture")
	le(uint32(8)) // string
	str("llama")
	str("general.alignment")
	le(uint32(4)) // uint32
	le(uint32(32))
	if !bytes.HasPrefix(data, want.Bytes()) {
		t.Fatalf("prefix\n%x\nwant\n%x", data[:want.Len()], want.Bytes())
	}
	// The string array: type 9, element type 8, count, then strings.
	var arr bytes.Buffer
	le2 := func(v any) { binary.Write(&arr, binary.LittleEndian, v) }
	key := "tokenizer.ggml.tokens"
	le2(uint64(len(key)))
	arr.WriteString(key)
	le2(uint32(9))
	le2(uint32(8))
	le2(uint64(3))
	for _, s := range []string{"<unk>", "<s>", "hi"} {
		le2(uint64(len(s)))
		arr.WriteString(s)
	}
	if !bytes.Contains(data, arr.Bytes()) {
		t.Error("string array not encoded as type 9 / element type 8 / count / strings")
	}
	// The first tensor info follows the KVs: name, n_dims, dims, type, offset.
	var info bytes.Buffer
	le3 := func(v any) { binary.Write(&info, binary.LittleEndian, v) }
	le3(uint64(len("token_embd.weight")))
	info.WriteString("token_embd.weight")
	le3(uint32(2))
	le3(uint64(8))
	le3(uint64(5))
	le3(uint32(30)) // GGML_TYPE_BF16
	le3(uint64(0))
	if !bytes.Contains(data, info.Bytes()) {
		t.Error("tensor info of token_embd.weight not found in the expected encoding")
	}
}

func TestGGUFRejects(t *testing.T) {
	data, _, _ := smallGGUF(t)
	g, err := parseGGUF(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func([]byte) []byte) []byte { return f(bytes.Clone(data)) }
	cases := map[string][]byte{
		"empty":       nil,
		"bad magic":   mut(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version 1":   mut(func(b []byte) []byte { b[4] = 1; return b }),
		"cut header":  data[:40],
		"cut data":    data[:len(data)-1],
		"huge string": mut(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[24:], 1<<40); return b }),
	}
	// A misaligned tensor offset: the last tensor info's offset field sits
	// just before the data padding; find it by value.
	last := g.Tensors[len(g.Tensors)-1]
	var off [8]byte
	binary.LittleEndian.PutUint64(off[:], last.Offset)
	if i := bytes.LastIndex(data[:g.DataStart], off[:]); i > 0 {
		cases["misaligned"] = mut(func(b []byte) []byte { b[i]++; return b })
	} else {
		t.Fatal("could not find the last tensor's offset")
	}
	for name, b := range cases {
		if _, err := parseGGUF(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestLlamaGGUF(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	const target = 6 << 20
	ts, err := writeLlamaGGUF(path, target, 1)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := parseGGUF(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Tensors, ts) {
		t.Error("parsed tensors differ from the ones written")
	}
	if g.Get("general.architecture") != "llama" || g.Get("general.alignment") != uint32(32) {
		t.Errorf("architecture %v alignment %v", g.Get("general.architecture"), g.Get("general.alignment"))
	}
	if r := float64(len(data)) / target; r < 0.8 || r > 1.25 {
		t.Errorf("%d bytes for a target of %d", len(data), target)
	}
	layers, _ := g.Get("llama.block_count").(uint32)
	hidden, _ := g.Get("llama.embedding_length").(uint32)
	if want := 2 + 9*int(layers) + 1; len(g.Tensors) != want || layers == 0 {
		t.Errorf("%d tensors for %d layers", len(g.Tensors), layers)
	}
	names := map[string]ggufTensor{}
	for _, ti := range g.Tensors {
		names[ti.Name] = ti
	}
	for _, n := range []string{"token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output_norm.weight", "output.weight"} {
		if _, ok := names[n]; !ok {
			t.Errorf("no tensor %s", n)
		}
	}
	if q := names["blk.0.attn_q.weight"]; q.Type != ggmlBF16 || q.Dims[0] != uint64(hidden) {
		t.Errorf("attn_q %+v, hidden %d", q, hidden)
	}
	if n := names["output_norm.weight"]; n.Type != ggmlF32 {
		t.Errorf("output_norm type %d", n.Type)
	}
	// Weights are finite, small bf16 values, as a real checkpoint's are.
	q := names["blk.0.attn_q.weight"]
	b := g.DataStart + int64(q.Offset)
	for i := int64(0); i < int64(q.Size()); i += 2 {
		v := math.Float32frombits(uint32(binary.LittleEndian.Uint16(data[b+i:])) << 16)
		if math.IsNaN(float64(v)) || math.Abs(float64(v)) > 1 || v == 0 {
			t.Fatalf("weight %d of attn_q is %v", i/2, v)
		}
	}
	if tok, _ := g.Get("tokenizer.ggml.tokens").([]any); len(tok) == 0 || !strings.HasPrefix(tok[0].(string), "<unk>") {
		t.Errorf("tokens %v", tok)
	}
}
