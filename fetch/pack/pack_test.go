package pack

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/modelfs/modelfs/tests/modelgen"
)

// dtypeFiles caches dtypeFile's output: the files are a pure function of
// the dtype, and generating normal samples one by one is slow under -race.
var dtypeFiles sync.Map // dtype -> dtypeFileResult

type dtypeFileResult struct {
	data    []byte
	tensors []modelgen.Tensor
}

// dtypeFile returns a safetensors file of tensors of one dtype whose sizes
// are odd multiples of the element, so that tensors and frames do not line
// up, plus a small F32 norm, and its tensors.
func dtypeFile(t *testing.T, dtype string) ([]byte, []modelgen.Tensor) {
	t.Helper()
	if r, ok := dtypeFiles.Load(dtype); ok {
		return r.(dtypeFileResult).data, r.(dtypeFileResult).tensors
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	ts, err := modelgen.WriteSafetensors(path, []modelgen.TensorSpec{
		{Name: "model.embed_tokens.weight", DType: dtype, Shape: []int64{257, 515}},
		{Name: "model.layers.0.input_layernorm.weight", DType: "F32", Shape: []int64{515}},
		{Name: "model.layers.0.mlp.up_proj.weight", DType: dtype, Shape: []int64{389, 515}},
		{Name: "lm_head.weight", DType: dtype, Shape: []int64{3, 5}},
	}, 7)
	if err != nil {
		t.Fatal(err)
	}
	data := readFile(t, path)
	dtypeFiles.Store(dtype, dtypeFileResult{data, ts})
	return data, ts
}

func TestRoundTripSafetensorsDtypes(t *testing.T) {
	for _, c := range []struct {
		dtype    string
		half     bool
		maxRatio float64 // packed/original must be below this
	}{
		// bf16 N(0, 0.02): the high byte (sign, 7 exponent bits) holds
		// ~2.7 bits, the low byte ~8: about 0.67.
		{"BF16", true, 0.72},
		// fp16 keeps 2 mantissa bits in the high byte: less to gain.
		{"F16", true, 0.90},
		// Plain: zstd does not gain, Huffman coding alone does a little
		// (the exponent byte of each f32, the spread of int8 values).
		{"F32", false, 0.95},
		{"I8", false, 0.95},
	} {
		t.Run(c.dtype, func(t *testing.T) {
			data, ts := dtypeFile(t, c.dtype)
			l, err := DetectLayout("dir/m.safetensors", bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			var want []Span
			for _, tn := range ts {
				if c.half && tn.DType == c.dtype {
					want = append(want, Span{tn.Begin, tn.End - tn.Begin})
				}
			}
			if !slices.Equal(l.Float16, want) {
				t.Fatalf("16-bit layout %v, want %v", l.Float16, want)
			}
			packed, ix := encodeBytes(t, data, EncodeOptions{FrameSize: MinFrameSize, Layout: l})
			checkRoundTrip(t, packed, data)
			ratio := float64(len(packed)) / float64(len(data))
			t.Logf("%s: %d frames, packed/original %.3f", c.dtype, len(ix.Frames), ratio)
			if ratio >= c.maxRatio {
				t.Errorf("packed/original %.3f, want below %.2f", ratio, c.maxRatio)
			}
			grouped := 0
			for _, f := range ix.Frames {
				if f.Codec == CodecSplit && hasPairs(t, packed[f.Off:f.Off+f.Len]) {
					grouped++
				}
			}
			if c.half != (grouped > 0) {
				t.Errorf("%d of %d frames byte-grouped", grouped, len(ix.Frames))
			}
		})
	}
}

// TestRoundTripGeneratedModel packs modelgen's realistic bf16 shards, at
// the default frame size.
func TestRoundTripGeneratedModel(t *testing.T) {
	dir := t.TempDir()
	m, err := modelgen.Generate(dir, modelgen.Options{TotalBytes: 12 << 20, Shards: 1, Layers: 2, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range m.Files {
		data := readFile(t, filepath.Join(dir, name))
		l, err := DetectLayout(name, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		packed, _ := encodeBytes(t, data, EncodeOptions{Layout: l})
		checkRoundTrip(t, packed, data)
		ratio := float64(len(packed)) / float64(len(data))
		if filepath.Ext(name) == ".safetensors" && ratio > 0.7 {
			t.Errorf("%s: packed/original %.3f, want at most 0.7 for bf16 N(0, 0.02) weights", name, ratio)
		}
	}
}

func TestRoundTripGGUF(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	tensors := []ggufTensor{
		{"token_embd.weight", 30, []uint64{1000, 301}},
		{"blk.0.attn_norm.weight", 0, []uint64{1000}},
		{"blk.0.ffn_up.weight", 1, []uint64{1000, 257}},
		{"blk.0.ffn_gate.weight", 24, []uint64{1000, 7}},
		{"output.weight", 30, []uint64{1000, 3}},
	}
	data, spans := writeGGUF(tensors, func(i int, p []byte) {
		switch tensors[i].typ {
		case 30:
			normalBF16(rng, p)
		case 1:
			normalF16(rng, p)
		default:
			for k := range p {
				p[k] = byte(rng.NormFloat64() * 20)
			}
		}
	})
	l, err := DetectLayout("model.gguf", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Span{spans[0], spans[2], spans[4]}
	if !slices.Equal(l.Float16, want) {
		t.Fatalf("16-bit layout %v, want %v", l.Float16, want)
	}
	packed, ix := encodeBytes(t, data, EncodeOptions{FrameSize: MinFrameSize, Layout: l})
	checkRoundTrip(t, packed, data)
	if ratio := float64(len(packed)) / float64(len(data)); ratio > 0.8 {
		t.Errorf("packed/original %.3f, want below 0.8", ratio)
	}
	if f := ix.Frames[0]; f.Codec != CodecSplit || !hasPairs(t, packed[f.Off:f.Off+f.Len]) {
		t.Errorf("the first frame, header and bf16, is %s, want split", ix.Frames[0].Codec)
	}
}

// hasPairs reports whether a split frame has a byte-grouped region.
func hasPairs(t *testing.T, payload []byte) bool {
	t.Helper()
	count, p, err := uvarint(payload)
	if err != nil {
		t.Fatal(err)
	}
	for range count {
		var r uint64
		if r, p, err = uvarint(p); err != nil {
			t.Fatal(err)
		}
		if r&1 == 1 {
			return true
		}
	}
	return false
}

func TestDetectLayoutOtherFiles(t *testing.T) {
	for name, data := range map[string][]byte{
		"config.json":       []byte(`{"hidden_size": 4096}`),
		"bad.safetensors":   []byte("not a safetensors file at all"),
		"bad.gguf":          []byte("GGUF\x09\x00\x00\x00"),
		"tokenizer.model":   bytes.Repeat([]byte{1, 2, 3}, 100),
		"empty.safetensors": nil,
	} {
		l, err := DetectLayout(name, bytes.NewReader(data), int64(len(data)))
		if len(l.Float16) != 0 {
			t.Errorf("%s: layout %v, want none", name, l.Float16)
		}
		isModel := filepath.Ext(name) == ".safetensors" || filepath.Ext(name) == ".gguf"
		if isModel != (err != nil) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

func TestOddSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, size := range []int{0, 1, 2, 3, MinFrameSize - 1, MinFrameSize, MinFrameSize + 1, 3*MinFrameSize + 12345} {
		for _, kind := range []string{"random", "zeros", "bf16"} {
			t.Run(fmt.Sprintf("%d-%s", size, kind), func(t *testing.T) {
				data := make([]byte, size)
				var l Layout
				switch kind {
				case "random":
					for i := range data {
						data[i] = byte(rng.Uint32())
					}
				case "bf16":
					// A 16-bit run at an odd offset, of an odd length: its
					// stray byte and the bytes around it stay plain.
					if size > 3 {
						normalBF16(rng, data[1:])
						l.Float16 = []Span{{1, int64(size - 2)}}
					}
				}
				packed, ix := encodeBytes(t, data, EncodeOptions{FrameSize: MinFrameSize, Layout: l})
				if want := (size + MinFrameSize - 1) / MinFrameSize; len(ix.Frames) != want {
					t.Fatalf("%d frames, want %d", len(ix.Frames), want)
				}
				for i, f := range ix.Frames {
					_, n := ix.FrameRange(i)
					if kind == "random" && (f.Codec != CodecRaw || f.Len != n) {
						t.Errorf("frame %d of random bytes: %s, %d bytes for %d; want raw", i, f.Codec, f.Len, n)
					}
					if kind == "zeros" && n > 64 && f.Len*10 > n {
						t.Errorf("frame %d of zeros: %s, %d bytes for %d", i, f.Codec, f.Len, n)
					}
				}
				checkRoundTrip(t, packed, data)
			})
		}
	}
}

func TestCorruptFrameIsAnError(t *testing.T) {
	data, ts := dtypeFile(t, "BF16")
	l, _ := DetectLayout("m.safetensors", bytes.NewReader(data), int64(len(data)))
	packed, ix := encodeBytes(t, data, EncodeOptions{FrameSize: MinFrameSize, Layout: l})
	_ = ts
	bad := len(ix.Frames) / 2
	f := ix.Frames[bad]
	for _, at := range []int64{f.Off, f.Off + f.Len/2, f.Off + f.Len - 1} {
		damaged := bytes.Clone(packed)
		damaged[at] ^= 0x10
		r, err := NewReader(bytes.NewReader(damaged), ix)
		if err != nil {
			t.Fatal(err)
		}
		fs, n := ix.FrameRange(bad)
		for _, rg := range [][2]int64{{fs, n}, {fs + 100, 1}, {fs - 10, 20}, {0, int64(len(data))}} {
			p := make([]byte, rg[1])
			if k, err := r.ReadAt(p, rg[0]); !errors.Is(err, ErrCorrupt) {
				t.Errorf("byte %d flipped: ReadAt [%d, +%d) = %d, %v; want ErrCorrupt", at, rg[0], rg[1], k, err)
			}
		}
		// The frames around it still read.
		for _, i := range []int{bad - 1, bad + 1} {
			fs, n := ix.FrameRange(i)
			p := make([]byte, n)
			if _, err := r.ReadAt(p, fs); err != nil || !bytes.Equal(p, data[fs:fs+n]) {
				t.Errorf("frame %d next to the damaged one: %v", i, err)
			}
		}
	}
}

// TestMalformedFrameWithMatchingHash feeds decodeFrame payloads whose
// hash would match (the check that comes first is skipped here): a bug or
// a crafted pack must give an error, not a panic or short output.
func TestMalformedFrameWithMatchingHash(t *testing.T) {
	d, err := newDecoder()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := dtypeFile(t, "BF16")
	l, _ := DetectLayout("m.safetensors", bytes.NewReader(data), int64(len(data)))
	packed, ix := encodeBytes(t, data, EncodeOptions{FrameSize: MinFrameSize, Layout: l})
	f := ix.Frames[1]
	good := packed[f.Off : f.Off+f.Len]
	_, n := ix.FrameRange(1)
	dst := make([]byte, n)
	st := &decodeState{}
	if err := decodeFrame(d.z, st, f.Codec, good, dst); err != nil {
		t.Fatalf("the intact frame: %v", err)
	}
	for name, p := range map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)/2],
		"trailing bytes": append(bytes.Clone(good), 0),
		"no regions":     {0},
		"huge region":    {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"odd pair run":   {1, 3},
	} {
		if err := decodeFrame(d.z, st, CodecSplit, p, dst); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	if err := decodeFrame(d.z, st, CodecZstd, good, dst); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a split frame decoded as zstd: %v, want ErrCorrupt", err)
	}
	if err := decodeFrame(d.z, st, CodecRaw, good, dst); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a split frame taken as raw: %v, want ErrCorrupt", err)
	}
}

func TestEncodeOptions(t *testing.T) {
	for _, fs := range []int64{MinFrameSize - 1, MaxFrameSize + 1, -5} {
		if _, err := Encode(t.Context(), &bytes.Buffer{}, bytes.NewReader(nil), 0, EncodeOptions{FrameSize: fs}); err == nil {
			t.Errorf("frame size %d accepted", fs)
		}
	}
	// A source shorter than the size given is an error, not a short pack.
	if _, err := Encode(t.Context(), &bytes.Buffer{}, bytes.NewReader(make([]byte, 10)), 1<<20, EncodeOptions{}); err == nil {
		t.Error("a 10-byte source packed as 1 MiB")
	}
}
