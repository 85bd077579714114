package modelgen

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const smallSize = 20 << 20

// generated caches one small model per seed: several tests inspect the
// same output and generating it is the slow part under -race.
var generated = map[int64]struct {
	dir string
	m   *Model
}{}

func smallModel(t *testing.T, seed int64) (string, *Model) {
	t.Helper()
	if g, ok := generated[seed]; ok {
		return g.dir, g.m
	}
	dir, err := os.MkdirTemp("", "modelgen-test-")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Generate(dir, Options{TotalBytes: smallSize, Shards: 3, Seed: seed})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	generated[seed] = struct {
		dir string
		m   *Model
	}{dir, m}
	return dir, m
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, g := range generated {
		os.RemoveAll(g.dir)
	}
	os.Exit(code)
}

func parseFile(t *testing.T, path string) []Tensor {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ParseSafetensors(f, fi.Size())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ts
}

func TestGenerateLayout(t *testing.T) {
	dir, m := smallModel(t, 1)
	if got := m.TotalBytes; math.Abs(float64(got-smallSize))/smallSize > 0.1 {
		t.Errorf("TotalBytes = %d, want within 10%% of %d", got, smallSize)
	}
	wantFiles := []string{"config.json", "generation_config.json",
		"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
		"model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"}
	if !reflect.DeepEqual(m.Files, wantFiles) {
		t.Errorf("Files = %v, want %v", m.Files, wantFiles)
	}
	for _, name := range m.Files {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}

	// Every shard parses to exactly the tensors Generate reported, with
	// keys sorted and data contiguous and aligned in state-dict order.
	var all []Tensor
	var total int64
	for i := range 3 {
		name := ShardName(i, 3)
		path := filepath.Join(dir, name)
		ts := parseFile(t, path)
		if len(ts) == 0 {
			t.Fatalf("%s has no tensors", name)
		}
		fi, _ := os.Stat(path)
		byOffset := append([]Tensor(nil), ts...)
		sortByOffset(byOffset)
		dataStart := byOffset[0].Begin
		if dataStart%8 != 0 {
			t.Errorf("%s: data starts at %d, not 8-aligned", name, dataStart)
		}
		end := dataStart
		for j, tn := range ts {
			if j > 0 && ts[j-1].Name >= tn.Name {
				t.Errorf("%s: header keys not sorted: %q before %q", name, ts[j-1].Name, tn.Name)
			}
			if tn.DType != "BF16" {
				t.Errorf("%s: dtype %s", tn.Name, tn.DType)
			}
			if tn.Size() != numElems(tn.Shape)*2 {
				t.Errorf("%s: size %d, shape %v", tn.Name, tn.Size(), tn.Shape)
			}
		}
		for _, tn := range byOffset {
			if tn.Begin != end || tn.Begin%8 != 0 {
				t.Errorf("%s: %s at %d, want %d (contiguous, 8-aligned)", name, tn.Name, tn.Begin, end)
			}
			end = tn.End
			total += tn.Size()
		}
		if end != fi.Size() {
			t.Errorf("%s: data ends at %d, file is %d bytes", name, end, fi.Size())
		}
		for j := range ts {
			ts[j].File = name
		}
		all = append(all, ts...)
	}
	if !reflect.DeepEqual(all, m.Tensors) {
		t.Errorf("parsed tensors differ from Model.Tensors")
	}
	if total != m.TotalBytes {
		t.Errorf("tensor bytes %d, Model.TotalBytes %d", total, m.TotalBytes)
	}

	// Data order within each shard is state-dict order (layer by layer), and
	// shards split the model in that order.
	var order []string
	for i := range 3 {
		var inShard []Tensor
		for _, tn := range m.Tensors {
			if tn.File == ShardName(i, 3) {
				inShard = append(inShard, tn)
			}
		}
		sortByOffset(inShard)
		for _, tn := range inShard {
			order = append(order, tn.Name)
		}
	}
	var want []string
	for _, tn := range m.Config.tensorSpecs() {
		want = append(want, tn.Name)
	}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("data order is not state-dict order:\n got %v\nwant %v", order, want)
	}
}

func sortByOffset(ts []Tensor) {
	for i := 1; i < len(ts); i++ { // insertion sort: tiny lists, no import
		for j := i; j > 0 && ts[j].Begin < ts[j-1].Begin; j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

func TestTensorNamesAndShapes(t *testing.T) {
	_, m := smallModel(t, 1)
	c := m.Config
	h, kv, in, v := int64(c.Hidden), int64(c.Hidden/4), int64(c.Intermediate), int64(c.Vocab)
	want := map[string][]int64{
		"model.embed_tokens.weight": {v, h},
		"model.norm.weight":         {h},
		"lm_head.weight":            {v, h},
	}
	for i := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		want[p+"self_attn.q_proj.weight"] = []int64{h, h}
		want[p+"self_attn.k_proj.weight"] = []int64{kv, h}
		want[p+"self_attn.v_proj.weight"] = []int64{kv, h}
		want[p+"self_attn.o_proj.weight"] = []int64{h, h}
		want[p+"mlp.gate_proj.weight"] = []int64{in, h}
		want[p+"mlp.up_proj.weight"] = []int64{in, h}
		want[p+"mlp.down_proj.weight"] = []int64{h, in}
		want[p+"input_layernorm.weight"] = []int64{h}
		want[p+"post_attention_layernorm.weight"] = []int64{h}
	}
	got := map[string][]int64{}
	for _, tn := range m.Tensors {
		if _, dup := got[tn.Name]; dup {
			t.Errorf("duplicate tensor %s", tn.Name)
		}
		got[tn.Name] = tn.Shape
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tensors = %v\nwant %v", got, want)
	}
	if c.Layers < 2 || c.KVHeads*4 != c.Heads || c.Hidden%c.Heads != 0 || c.Intermediate%256 != 0 {
		t.Errorf("implausible config %+v", c)
	}
}

func TestIndexAndConfig(t *testing.T) {
	dir, m := smallModel(t, 1)
	var index struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		}
		WeightMap map[string]string `json:"weight_map"`
	}
	readJSON(t, filepath.Join(dir, "model.safetensors.index.json"), &index)
	if index.Metadata.TotalSize != m.TotalBytes {
		t.Errorf("total_size = %d, want %d", index.Metadata.TotalSize, m.TotalBytes)
	}
	if len(index.WeightMap) != len(m.Tensors) {
		t.Errorf("weight_map has %d entries, model has %d tensors", len(index.WeightMap), len(m.Tensors))
	}
	for _, tn := range m.Tensors {
		if index.WeightMap[tn.Name] != tn.File {
			t.Errorf("weight_map[%s] = %q, want %q", tn.Name, index.WeightMap[tn.Name], tn.File)
		}
	}

	var cfg struct {
		Architectures     []string `json:"architectures"`
		Hidden            int      `json:"hidden_size"`
		Intermediate      int      `json:"intermediate_size"`
		Layers            int      `json:"num_hidden_layers"`
		Heads             int      `json:"num_attention_heads"`
		KVHeads           int      `json:"num_key_value_heads"`
		Vocab             int      `json:"vocab_size"`
		DType             string   `json:"torch_dtype"`
		TieWordEmbeddings bool     `json:"tie_word_embeddings"`
	}
	readJSON(t, filepath.Join(dir, "config.json"), &cfg)
	c := m.Config
	if cfg.Hidden != c.Hidden || cfg.Intermediate != c.Intermediate || cfg.Layers != c.Layers ||
		cfg.Heads != c.Heads || cfg.KVHeads != c.KVHeads || cfg.Vocab != c.Vocab ||
		cfg.DType != "bfloat16" || len(cfg.Architectures) != 1 || cfg.Architectures[0] != "LlamaForCausalLM" {
		t.Errorf("config.json = %+v, model config %+v", cfg, c)
	}
	// The config must describe the tensors actually written.
	for _, tn := range m.Tensors {
		switch {
		case tn.Name == "model.embed_tokens.weight" && !reflect.DeepEqual(tn.Shape, []int64{int64(cfg.Vocab), int64(cfg.Hidden)}),
			strings.HasSuffix(tn.Name, "k_proj.weight") && tn.Shape[0] != int64(cfg.KVHeads*cfg.Hidden/cfg.Heads),
			strings.HasSuffix(tn.Name, "gate_proj.weight") && tn.Shape[0] != int64(cfg.Intermediate):
			t.Errorf("%s shape %v inconsistent with config.json", tn.Name, tn.Shape)
		}
	}

	var tok struct {
		Model struct {
			Type  string         `json:"type"`
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	readJSON(t, filepath.Join(dir, "tokenizer.json"), &tok)
	if tok.Model.Type != "BPE" || len(tok.Model.Vocab) != cfg.Vocab {
		t.Errorf("tokenizer.json: type %q, %d tokens, want BPE with %d", tok.Model.Type, len(tok.Model.Vocab), cfg.Vocab)
	}
	for _, name := range []string{"generation_config.json", "tokenizer_config.json"} {
		var v map[string]any
		readJSON(t, filepath.Join(dir, name), &v)
	}
}

func TestFullVocabTokenizerSize(t *testing.T) {
	n := len(tokenizerJSON(fullVocab, 1))
	if n < 200<<10 || n > 1<<20 {
		t.Errorf("tokenizer.json is %d bytes, want a few hundred KiB", n)
	}
	var v map[string]any
	if err := json.Unmarshal(tokenizerJSON(fullVocab, 1), &v); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func hashDir(t *testing.T, dir string, files []string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for _, name := range files {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = sha256.Sum256(data)
	}
	return out
}

func TestDeterminism(t *testing.T) {
	dir1, m1 := smallModel(t, 1)
	dir2 := t.TempDir()
	m2, err := Generate(dir2, Options{TotalBytes: smallSize, Shards: 3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m1, m2) {
		t.Fatal("same options gave different models")
	}
	h1, h2 := hashDir(t, dir1, m1.Files), hashDir(t, dir2, m2.Files)
	if !reflect.DeepEqual(h1, h2) {
		t.Error("same seed gave different bytes")
	}

	dir3, m3 := smallModel(t, 2)
	h3 := hashDir(t, dir3, m3.Files)
	for i := range 3 {
		name := ShardName(i, 3)
		if h1[name] == h3[name] {
			t.Errorf("%s identical for seeds 1 and 2", name)
		}
	}
}

// TestTensorsDistinct checks that no two 4 KiB pages of weight data are
// equal, so serving the wrong block cannot go unnoticed.
func TestTensorsDistinct(t *testing.T) {
	dir, m := smallModel(t, 1)
	seen := map[[32]byte]string{}
	for i := range 3 {
		name := ShardName(i, 3)
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range m.Tensors {
			if tn.File != name {
				continue
			}
			for off := tn.Begin; off+4096 <= tn.End; off += 4096 {
				h := sha256.Sum256(data[off : off+4096])
				if prev, ok := seen[h]; ok {
					t.Fatalf("page at %s+%d duplicates %s", tn.Name, off-tn.Begin, prev)
				}
				seen[h] = fmt.Sprintf("%s+%d", tn.Name, off-tn.Begin)
			}
		}
	}
}

func TestValueDistribution(t *testing.T) {
	dir, m := smallModel(t, 1)
	for _, tn := range m.Tensors {
		if tn.Name != "model.layers.0.mlp.up_proj.weight" && tn.Name != "model.layers.0.input_layernorm.weight" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, tn.File))
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, tn.Size())
		_, err = f.ReadAt(data, tn.Begin)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		var sum, sumSq float64
		n := len(data) / 2
		for i := range n {
			x := float64(FromBF16(binary.LittleEndian.Uint16(data[2*i:])))
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("%s: non-finite value", tn.Name)
			}
			sum += x
			sumSq += x * x
		}
		mean := sum / float64(n)
		std := math.Sqrt(sumSq/float64(n) - mean*mean)
		wantMean := 0.0
		if len(tn.Shape) == 1 {
			wantMean = 1
		}
		// Norm vectors are short (a few hundred values), so allow more slack.
		if math.Abs(mean-wantMean) > 0.005 || std < 0.015 || std > 0.025 {
			t.Errorf("%s: mean %.5f std %.5f, want ~%v and ~0.02", tn.Name, mean, std, wantMean)
		}
	}
}

func TestToBF16(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80},
		{-2, 0xc000},
		{0, 0},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, rounds to even (down)
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, rounds to even (up)
		{math.Float32frombits(0x3f808001), 0x3f81}, // above half, rounds up
	} {
		if got := toBF16(c.in); got != c.want {
			t.Errorf("toBF16(%#x) = %#x, want %#x", math.Float32bits(c.in), got, c.want)
		}
	}
}

func TestPlanSizes(t *testing.T) {
	for _, target := range []int64{1 << 20, 5 << 20, 20 << 20, 100 << 20, 1 << 30, 2 << 30, 7 << 30, 14 << 30, 70 << 30} {
		c, err := plan(target, 0)
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(c.WeightBytes(), target); e > 0.1 {
			t.Errorf("plan(%d) = %+v: %d bytes, off by %.1f%%", target, c, c.WeightBytes(), 100*e)
		}
		if target >= 1<<30 && (c.Layers != 32 || c.Vocab != fullVocab) {
			t.Errorf("plan(%d) = %+v, want 32 layers and full vocab", target, c)
		}
		if c.Layers < 2 || c.Hidden%64 != 0 || c.KVHeads*4 != c.Heads {
			t.Errorf("plan(%d) = %+v is malformed", target, c)
		}
	}
	if c, _ := plan(20<<20, 5); c.Layers != 5 {
		t.Errorf("explicit Layers ignored: %+v", c)
	}
}

func TestGenerateOptions(t *testing.T) {
	for _, o := range []Options{
		{TotalBytes: 0},
		{TotalBytes: 1 << 20, Shards: -1},
		{TotalBytes: 1 << 20, Layers: 1},
		{TotalBytes: 1 << 20, Shards: 1000},
	} {
		if _, err := Generate(t.TempDir(), o); err == nil {
			t.Errorf("Generate(%+v) succeeded, want error", o)
		}
	}
	// Default sharding: one shard for a small model.
	m, err := Generate(t.TempDir(), Options{TotalBytes: 2 << 20, Layers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if m.Files[0] != "config.json" || !strings.Contains(strings.Join(m.Files, " "), "model-00001-of-00001.safetensors") {
		t.Errorf("files = %v", m.Files)
	}
	if m.Config.Layers != 3 {
		t.Errorf("layers = %d, want 3", m.Config.Layers)
	}
}

func TestAssignShards(t *testing.T) {
	sizes := []int64{100, 1, 1, 1, 1, 1, 1, 1, 1, 100}
	for n := 1; n <= len(sizes); n++ {
		got := assignShards(sizes, n)
		if got[0] != 0 || got[len(got)-1] != n-1 {
			t.Fatalf("n=%d: %v", n, got)
		}
		for i := 1; i < len(got); i++ {
			if d := got[i] - got[i-1]; d != 0 && d != 1 {
				t.Fatalf("n=%d: %v skips or reorders shards", n, got)
			}
		}
	}
}

// ---- ParseSafetensors on malformed input ----

// file builds a safetensors file from a raw header and data length.
func file(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

func withLen(n uint64, rest []byte) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
}

const validHeader = `{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`

func TestParseValid(t *testing.T) {
	data := file(validHeader+"   ", 16)
	ts, err := ParseSafetensors(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	base := int64(8 + len(validHeader) + 3)
	want := []Tensor{
		{Name: "a", DType: "BF16", Shape: []int64{2, 2}, Begin: base, End: base + 8},
		{Name: "b", DType: "F32", Shape: []int64{2}, Begin: base + 8, End: base + 16},
	}
	if !reflect.DeepEqual(ts, want) {
		t.Errorf("got %+v\nwant %+v", ts, want)
	}

	// Header order is preserved, not sorted.
	data = file(`{"z":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[],"data_offsets":[1,2]}}`, 2)
	ts, err = ParseSafetensors(bytes.NewReader(data), int64(len(data)))
	if err != nil || len(ts) != 2 || ts[0].Name != "z" || ts[1].Name != "a" {
		t.Errorf("got %+v, %v", ts, err)
	}

	// An empty model is valid.
	data = file(`{}`, 0)
	if ts, err := ParseSafetensors(bytes.NewReader(data), int64(len(data))); err != nil || len(ts) != 0 {
		t.Errorf("empty header: %v, %v", ts, err)
	}

	// Round trip through the header encoder.
	in := []Tensor{{Name: "x", DType: "I64", Shape: []int64{3}, Begin: 0, End: 24}}
	data = append(encodeHeader(in, nil), make([]byte, 24)...)
	ts, err = ParseSafetensors(bytes.NewReader(data), int64(len(data)))
	if err != nil || len(ts) != 1 || ts[0].Begin%8 != 0 || ts[0].Size() != 24 {
		t.Errorf("round trip: %+v, %v", ts, err)
	}
}

// countingReader fails the test if ParseSafetensors asks for more than the
// file holds, which is how an unchecked length would show up.
type countingReader struct {
	t    *testing.T
	data []byte
}

func (r countingReader) ReadAt(p []byte, off int64) (int, error) {
	if int64(len(p)) > int64(len(r.data)) {
		r.t.Fatalf("ReadAt of %d bytes on a %d-byte file", len(p), len(r.data))
	}
	return bytes.NewReader(r.data).ReadAt(p, off)
}

func TestParseRejects(t *testing.T) {
	entry := func(dtype, shape, offs string) string {
		return `{"t":{"dtype":"` + dtype + `","shape":` + shape + `,"data_offsets":` + offs + `}}`
	}
	cases := map[string][]byte{
		"empty":                 nil,
		"short":                 {1, 0, 0},
		"header beyond file":    withLen(1000, []byte(`{}`)),
		"huge header length":    withLen(1<<62, []byte(`{}`)),
		"max uint64 length":     withLen(math.MaxUint64, []byte(`{}`)),
		"header length 0":       withLen(0, nil),
		"truncated JSON":        file(validHeader[:len(validHeader)-5], 16),
		"not an object":         file(`[1,2]`, 0),
		"trailing garbage":      file(`{}x`, 0),
		"two objects":           file(`{}{}`, 0),
		"invalid UTF-8":         file("{\"\xff\":1}", 0),
		"offset out of range":   file(entry("U8", "[4]", "[0,4]"), 3),
		"offset end < begin":    file(entry("U8", "[0]", "[4,0]"), 8),
		"negative offset":       file(entry("U8", "[4]", "[-4,0]"), 8),
		"float offset":          file(entry("U8", "[4]", "[0,4.0]"), 8),
		"string offset":         file(entry("U8", "[4]", `[0,"4"]`), 8),
		"three offsets":         file(entry("U8", "[4]", "[0,4,8]"), 8),
		"null offsets":          file(entry("U8", "[4]", "null"), 8),
		"unknown dtype":         file(entry("Q7", "[4]", "[0,4]"), 4),
		"dtype not string":      file(`{"t":{"dtype":7,"shape":[4],"data_offsets":[0,4]}}`, 4),
		"shape/size mismatch":   file(entry("BF16", "[4]", "[0,4]"), 4),
		"negative dim":          file(entry("U8", "[-4]", "[0,4]"), 4),
		"null dim":              file(entry("U8", "[null]", "[0,0]"), 4),
		"shape overflow":        file(entry("F64", "[4611686018427387903,4611686018427387903]", "[0,8]"), 8),
		"shape mul overflow":    file(entry("U8", "[4294967296,4294967296]", "[0,0]"), 8),
		"missing shape":         file(`{"t":{"dtype":"U8","data_offsets":[0,1]}}`, 1),
		"entry not object":      file(`{"t":[1]}`, 1),
		"entry null":            file(`{"t":null}`, 1),
		"duplicate key":         file(`{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2),
		"metadata not strings":  file(`{"__metadata__":{"a":1}}`, 0),
		"overlapping":           file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 8),
		"same range":            file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, 8),
		"empty inside another":  file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}`, 8),
		"contained in another":  file(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 8),
		"header over data size": withLen(uint64(MaxHeaderLen+1), make([]byte, 16)),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			size := int64(len(data))
			if name == "header over data size" {
				size = MaxHeaderLen + 100 // claims a big file; the cap must still apply
			}
			ts, err := ParseSafetensors(countingReader{t, data}, size)
			if err == nil {
				t.Errorf("accepted: %+v", ts)
			}
			t.Log(err)
		})
	}
}

// errReader fails every read.
type errReader struct{}

func (errReader) ReadAt([]byte, int64) (int, error) { return 0, io.ErrClosedPipe }

func TestParseReadError(t *testing.T) {
	if _, err := ParseSafetensors(errReader{}, 100); err == nil {
		t.Error("read error not reported")
	}
}

func FuzzParseSafetensors(f *testing.F) {
	f.Add(file(validHeader, 16))
	f.Add(file(`{}`, 0))
	f.Add(append(encodeHeader([]Tensor{{Name: "w", DType: "BF16", Shape: []int64{2, 3}, End: 12}}, map[string]string{"format": "pt"}), make([]byte, 16)...))
	f.Add(file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 8))
	f.Add(file(`{"t":{"dtype":"BF16","shape":[4],"data_offsets":[0,4]}}`, 4))
	f.Add(withLen(1<<62, []byte(`{}`)))
	f.Add(file(validHeader[:40], 16))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		ts, err := ParseSafetensors(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		hdrEnd := 8 + int64(binary.LittleEndian.Uint64(data))
		byOffset := append([]Tensor(nil), ts...)
		sortByOffset(byOffset)
		prevEnd := hdrEnd
		for _, tn := range byOffset {
			if tn.Begin < hdrEnd || tn.Begin > tn.End || tn.End > size {
				t.Fatalf("%s: [%d, %d) outside data [%d, %d)", tn.Name, tn.Begin, tn.End, hdrEnd, size)
			}
			if tn.Begin < prevEnd && tn.Size() > 0 {
				t.Fatalf("%s overlaps its predecessor", tn.Name)
			}
			if n, ok := dtypeSizes[tn.DType]; ok && tn.Size() != numElems(tn.Shape)*n {
				t.Fatalf("%s: size %d for %s%v", tn.Name, tn.Size(), tn.DType, tn.Shape)
			}
			prevEnd = max(prevEnd, tn.End)
		}
	})
}
