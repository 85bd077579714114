package main

import (
	"slices"
	"strings"
	"testing"
)

func TestPackedScenarios(t *testing.T) {
	if slices.ContainsFunc(defaultScenarios, func(s string) bool { return strings.HasPrefix(s, packedScenario) }) {
		t.Errorf("default scenarios %v include a pack-* one, which needs a pack first", defaultScenarios)
	}
	if !wantsPacked([]string{"seq", "pack-seq"}) || wantsPacked([]string{"seq", "ttft"}) {
		t.Error("wantsPacked")
	}
	b := &bench{model: &benchModel{Files: []modelFile{{"a.safetensors", 10}}, Shards: []string{"a.safetensors"}}}
	for _, name := range []string{"pack-seq", "pack-mmap-header"} {
		plain, _ := strings.CutPrefix(name, packedScenario)
		p, s := b.spec(name), b.spec(plain)
		if p.prefix != packedPrefix || s.prefix != prefix {
			t.Errorf("%s mounts %q, %s mounts %q", name, p.prefix, plain, s.prefix)
		}
		if p.rawRef != s.rawRef || p.localRef != s.localRef || !slices.Equal(p.files, s.files) {
			t.Errorf("%s reads or compares unlike %s: %+v, %+v", name, plain, p, s)
		}
	}
	rows := []row{
		{Name: "seq", Phase: "cold", Seconds: stat{Median: 2}},
		{Name: "pack-seq", Phase: "cold", Seconds: stat{Median: 3}},
		{Name: "pack-seq", Phase: "warm", Seconds: stat{Median: 1}},
		{Name: "pack-mmap-header", Phase: "cold", Seconds: stat{Median: 1}}, // no plain row
	}
	got := packedRatios(rows)
	if len(got) != 1 || !strings.Contains(got[0], "pack-seq cold time ÷ seq cold time (medians): 1.50") {
		t.Errorf("packedRatios = %q", got)
	}
}
