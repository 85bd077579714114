package loadorder

import (
	"fmt"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/modelformat/formattest"
)

// Writers of the test files the planner reads; modelformat's tests check
// the parsers themselves.

// Plan wraps a rejection with the file's path.
func TestSafetensorsRejectNamesPath(t *testing.T) {
	data := formattest.WithLength(formattest.WriteSafetensors(t, formattest.SafetensorsTensor{Name: "w", DType: "U8", Shape: []int64{4}}).Data, 1<<62)
	_, err := Plan([]File{memFile(t, "dir/model.safetensors", data, nil)}, PlanOptions{SmallFile: 1})
	if err == nil || !strings.HasPrefix(err.Error(), "plan dir/model.safetensors: safetensors: ") {
		t.Fatalf("error %v does not name the file", err)
	}
}

func TestPlanGGUF(t *testing.T) {
	// Header order differs from layer order, as in some converters.
	tensors := []formattest.GGUFTensor{formattest.LlamaGGUFTensors[8], formattest.LlamaGGUFTensors[4], formattest.LlamaGGUFTensors[2], formattest.LlamaGGUFTensors[0], formattest.LlamaGGUFTensors[7], formattest.LlamaGGUFTensors[1]}
	g := formattest.WriteGGUF(t, 32, tensors...)
	q4 := formattest.WriteGGUF(t, 32, formattest.LlamaGGUFTensors[0])
	files := []File{
		memFile(t, "model-Q8_0.gguf", g.Data, nil),
		memFile(t, "model-Q4_K_M.gguf", q4.Data, nil),
		memFile(t, "README.md", []byte("# model"), nil),
	}
	got, err := Plan(files, PlanOptions{SmallFile: 100})
	if err != nil {
		t.Fatal(err)
	}
	tr := func(p string, g formattest.GGUFFile, k int) Range {
		tt := formattest.LlamaGGUFTensors[k]
		return Range{Path: p, Off: g.Offsets[tt.Name], Len: int64(tt.Size), Tensor: tt.Name}
	}
	// Quantizations in one folder are separate checkpoints, not shards.
	checkRanges(t, got, []Range{
		{Path: "README.md", Len: 7},
		{Path: "model-Q4_K_M.gguf", Len: q4.DataStart},
		tr("model-Q4_K_M.gguf", q4, 0),
		{Path: "model-Q8_0.gguf", Len: g.DataStart},
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
	s1 := formattest.WriteGGUF(t, 32, formattest.LlamaGGUFTensors[0], formattest.LlamaGGUFTensors[4])
	s2 := formattest.WriteGGUF(t, 32, formattest.LlamaGGUFTensors[1], formattest.LlamaGGUFTensors[8])
	got, err := Plan([]File{
		memFile(t, "m-00002-of-00002.gguf", s2.Data, nil),
		memFile(t, "m-00001-of-00002.gguf", s1.Data, nil),
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
