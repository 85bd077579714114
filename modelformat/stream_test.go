package modelformat

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/modelfs/modelfs/modelformat/formattest"
)

// Tensors come with their dtype and shape as the file states them.
func TestSafetensorsDTypesAndShapes(t *testing.T) {
	st := formattest.WriteSafetensors(t,
		formattest.SafetensorsTensor{Name: "b", DType: "BF16", Shape: []int64{3, 2}},
		formattest.SafetensorsTensor{Name: "a", DType: "F32", Shape: []int64{}},
		formattest.SafetensorsTensor{Name: "c", DType: "U8", Shape: []int64{5}},
	)
	h, err := ReadSafetensors(formattest.NewStrict(t, st.Data), int64(len(st.Data)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(h.Tensors)
	want := fmt.Sprint([]Tensor{
		{"b", "BF16", []uint64{3, 2}, st.Offsets["b"][0], 12},
		{"a", "F32", []uint64{}, st.Offsets["a"][0], 4},
		{"c", "U8", []uint64{5}, st.Offsets["c"][0], 5},
	})
	if got != want || h.Format != Safetensors || h.DataStart != st.Header {
		t.Fatalf("header %v at %d, want %v at %d", got, h.DataStart, want, st.Header)
	}
	h, err = ReadSafetensors(formattest.NewStrict(t, st.Data), int64(len(st.Data)), Options{NoShapes: true})
	if err != nil || h.Tensors[0].Shape != nil || h.Tensors[0].DType != "BF16" {
		t.Fatalf("NoShapes: %+v, %v", h, err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r *bytes.Reader
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// ScanSafetensors hands each tensor over before the rest of a long header
// has been read, and an error from the callback stops the scan.
func TestScanSafetensorsStreams(t *testing.T) {
	var specs []formattest.SafetensorsTensor
	for i := range 8000 {
		specs = append(specs, formattest.SafetensorsTensor{Name: fmt.Sprintf("model.layers.%d.weight", i), DType: "U8", Shape: []int64{1}})
	}
	st := formattest.WriteSafetensors(t, specs...)
	if st.Header < 256<<10 {
		t.Fatalf("header of %d bytes is too short to show streaming", st.Header)
	}
	r := &countingReader{r: bytes.NewReader(st.Data)}
	var first int64 = -1
	seen := 0
	h, err := ScanSafetensors(r, int64(len(st.Data)), Options{}, func(tn Tensor) error {
		if first < 0 {
			first = r.n.Load()
			if tn.Name != specs[0].Name || tn.Offset != st.Offsets[tn.Name][0] || fmt.Sprint(tn.Shape) != "[1]" {
				t.Errorf("first tensor %+v", tn)
			}
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(specs) || len(h.Tensors) != len(specs) {
		t.Fatalf("handed over %d tensors, header has %d, want %d", seen, len(h.Tensors), len(specs))
	}
	if first > 128<<10 {
		t.Errorf("first tensor handed over after %d of the header's %d bytes were read", first, st.Header)
	}

	stop := errors.New("enough")
	r = &countingReader{r: bytes.NewReader(st.Data)}
	n := 0
	_, err = ScanSafetensors(r, int64(len(st.Data)), Options{}, func(Tensor) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Fatalf("scan after the callback's error: %v, %d tensors", err, n)
	}
	if r.n.Load() >= st.Header {
		t.Errorf("stopped scan read %d bytes, the whole %d-byte header", r.n.Load(), st.Header)
	}
}

// The GGUF metadata asked for comes back as Go values; the rest is skipped.
func TestGGUFMetadataKeys(t *testing.T) {
	g := formattest.WriteGGUF(t, 64, formattest.LlamaGGUFTensors[:2]...)
	h, err := ReadGGUF(formattest.NewStrict(t, g.Data), int64(len(g.Data)), Options{
		GGUFKeys: []string{"general.architecture", "llama.block_count", "tokenizer.ggml.tokens", "general.alignment", "absent"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"general.architecture":  "llama",
		"llama.block_count":     uint32(2),
		"tokenizer.ggml.tokens": []any{"<s>", "</s>", "hello"},
		"general.alignment":     uint32(64),
	}
	if fmt.Sprint(h.Metadata) != fmt.Sprint(want) {
		t.Errorf("metadata %v, want %v", h.Metadata, want)
	}
	if h.Version != 3 || h.Alignment != 64 || h.Format != GGUF || len(h.Tensors) != 2 {
		t.Errorf("header %+v", h)
	}
	h, err = ReadGGUF(formattest.NewStrict(t, g.Data), int64(len(g.Data)), Options{})
	if err != nil || h.Metadata != nil {
		t.Fatalf("no keys asked: metadata %v, %v", h.Metadata, err)
	}
}

func TestReadDispatchesByName(t *testing.T) {
	st := formattest.WriteSafetensors(t, formattest.SafetensorsTensor{Name: "w", DType: "U8", Shape: []int64{2}})
	g := formattest.WriteGGUF(t, 32, formattest.LlamaGGUFTensors[1])
	for _, c := range []struct {
		name string
		data []byte
		want Format
	}{{"dir/m.safetensors", st.Data, Safetensors}, {"m.gguf", g.Data, GGUF}} {
		h, err := Read(c.name, formattest.NewStrict(t, c.data), int64(len(c.data)), Options{})
		if err != nil || h.Format != c.want || len(h.Tensors) != 1 {
			t.Errorf("%s: %+v, %v", c.name, h, err)
		}
	}
	if _, err := Read("config.json", formattest.NewStrict(t, st.Data), int64(len(st.Data)), Options{}); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("config.json: %v", err)
	}
	if _, err := Read("m.gguf", formattest.NewStrict(t, st.Data), int64(len(st.Data)), Options{}); err == nil {
		t.Error("a safetensors file named .gguf parsed")
	}
}
