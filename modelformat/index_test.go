package modelformat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/modelformat/formattest"
)

func readIndexString(s string) (*Index, error) {
	return ReadIndex(strings.NewReader(s), int64(len(s)), Options{})
}

func TestReadIndex(t *testing.T) {
	idx, err := readIndexString(`{"metadata":{"total_size":123,"x":[1,{"y":null}]},"weight_map":{` +
		`"lm_head.weight":"model-00002-of-00002.safetensors",` +
		`"model.embed_tokens.weight":"model-00001-of-00002.safetensors",` +
		`"model.layers.0.w":"model-00001-of-00002.safetensors",` +
		`"model.norm.weight":"sub/model-00002-of-00002.safetensors"}}  `)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "sub/model-00002-of-00002.safetensors"}
	if !slices.Equal(idx.Shards, want) || idx.Tensors != 4 {
		t.Fatalf("index %+v, want shards %q of 4 tensors", idx, want)
	}
}

func TestReadIndexRejects(t *testing.T) {
	for _, c := range []struct{ name, index, want string }{
		{"empty", ``, "unexpected EOF"},
		{"not an object", `[1]`, "not a JSON object"},
		{"no weight map", `{"metadata":{}}`, "no \"weight_map\""},
		{"null weight map", `{"weight_map":null}`, "not an object"},
		{"empty weight map", `{"weight_map":{}}`, "no \"weight_map\""},
		{"value not a string", `{"weight_map":{"a":1}}`, "not a string"},
		{"absolute shard", `{"weight_map":{"a":"/etc/passwd"}}`, "plain relative"},
		{"escaping shard", `{"weight_map":{"a":"../x.safetensors"}}`, "plain relative"},
		{"backslash", `{"weight_map":{"a":"..\\x.safetensors"}}`, "backslash"},
		{"empty shard", `{"weight_map":{"a":""}}`, "empty"},
		{"twice", `{"weight_map":{"a":"x"},"weight_map":{"a":"x"}}`, "twice"},
		{"trailing data", `{"weight_map":{"a":"x"}} {}`, "after"},
		{"truncated", `{"weight_map":{"a":"x"`, "unexpected EOF"},
		{"long name", `{"weight_map":{"a":"` + strings.Repeat("x", maxName+1) + `"}}`, "longer than"},
	} {
		if _, err := readIndexString(c.index); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	big := `{"weight_map":{"a":"x"}}`
	if _, err := ReadIndex(strings.NewReader(big), int64(len(big)), Options{MaxHeader: 10}); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("index over MaxHeader: %v", err)
	}
}

// hostileIndex is a valid index of about n bytes naming as many distinct
// shards as fit.
func hostileIndex(n int) string {
	var b strings.Builder
	b.WriteString(`{"weight_map":{`)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `"%x":"%x",`, i, i)
	}
	return strings.TrimSuffix(b.String(), ",") + "}}"
}

func FuzzReadIndex(f *testing.F) {
	f.Add(`{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`)
	f.Add(`{"metadata":{"total_size":1},"weight_map":{"a":"x","b":"x"}}`)
	f.Add(`{"weight_map":{"a":"../x"}}`)
	f.Add(`{"weight_map":{"\u00e9":"\ud83d\ude00"}}`)
	f.Add(`{"weight_map":null}`)
	f.Add(hostileIndex(4 << 10))
	f.Fuzz(func(t *testing.T, s string) {
		var idx *Index
		var err error
		alloc := formattest.Allocated(func() { idx, err = readIndexString(s) })
		if limit := 4*uint64(len(s)) + 64<<10; alloc > limit {
			t.Fatalf("parsing %d bytes allocated %d, over the bound of %d", len(s), alloc, limit)
		}
		// encoding/json must accept what ReadIndex does, and find no shard
		// it lacks (it may find fewer: of a repeated tensor name it keeps
		// the last).
		var v struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		jerr := json.Unmarshal([]byte(s), &v)
		if err != nil {
			return
		}
		if jerr != nil {
			t.Fatalf("accepted an index encoding/json rejects (%v): %q", jerr, s)
		}
		var want []string
		for _, shard := range v.WeightMap {
			want = append(want, shard)
		}
		slices.Sort(want)
		want = slices.Compact(want)
		for _, w := range want {
			if _, found := slices.BinarySearch(idx.Shards, w); !found {
				t.Fatalf("shards %q, encoding/json finds %q", idx.Shards, want)
			}
		}
		for _, shard := range idx.Shards {
			if checkShard(shard) != nil {
				t.Fatalf("shard %q is not a plain relative path", shard)
			}
		}
	})
}

// An index is streamed: however many tensors it maps and whatever else
// it holds, reading it keeps only the distinct shard names.
func TestReadIndexMemory(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, `{"metadata":{"total_size":1,"junk":"%s"},"weight_map":{`, strings.Repeat("j", 2<<20))
	for i := range 100000 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"model.layers.%d.self_attn.q_proj.weight":"model-%05d-of-00002.safetensors"`, i, i%2+1)
	}
	b.WriteString("}}")
	data := []byte(b.String())
	var idx *Index
	var err error
	alloc := formattest.Allocated(func() { idx, err = ReadIndex(bytes.NewReader(data), int64(len(data)), Options{}) })
	if err != nil {
		t.Fatal(err)
	}
	if want := "model-00001-of-00002.safetensors,model-00002-of-00002.safetensors"; strings.Join(idx.Shards, ",") != want || idx.Tensors != 100000 {
		t.Errorf("index %+v, want shards %s", idx, want)
	}
	t.Logf("%d-byte index: allocated %d bytes", len(data), alloc)
	if alloc > 256<<10 {
		t.Errorf("reading a %d-byte index allocated %d bytes", len(data), alloc)
	}
}
