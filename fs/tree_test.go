package fs

import (
	"sort"
	"strings"
	"testing"
)

func TestBuildTreeSkipsUnsafeAndConflictingNames(t *testing.T) {
	long := strings.Repeat("x", 256)
	files := []File{
		{Path: "config.json"},
		{Path: "shards/model-00001.safetensors"},
		{Path: "a"}, {Path: "a/b"}, // a file and a prefix: the directory wins
		{Path: "../escape"}, {Path: "x/../../escape"}, {Path: "./dot"},
		{Path: "/abs"}, {Path: "a//b"}, {Path: ""}, {Path: "nul\x00name"},
		{Path: "ctl\x1bname"}, {Path: long}, {Path: "dir/" + long},
		{Path: "config.json"}, // duplicate
	}
	root, skipped := buildTree(files)
	var shown []string
	var walk func(prefix string, d *dirEntry)
	walk = func(prefix string, d *dirEntry) {
		for name := range d.files {
			shown = append(shown, prefix+name)
		}
		for name, sub := range d.dirs {
			walk(prefix+name+"/", sub)
		}
	}
	walk("", root)
	sort.Strings(shown)
	want := []string{"a/b", "config.json", "shards/model-00001.safetensors"}
	if strings.Join(shown, ",") != strings.Join(want, ",") {
		t.Fatalf("shown %q, want %q", shown, want)
	}
	if len(skipped) != len(files)-len(want) {
		t.Fatalf("skipped %d entries, want %d: %+v", len(skipped), len(files)-len(want), skipped)
	}
	for _, s := range skipped {
		if s.Reason == "" {
			t.Errorf("skipped %q without a reason", s.Path)
		}
	}
}

func FuzzSplitPath(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "a//b", "/abs", "a/./b", "ok.json", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		segs, err := splitPath(p)
		if err != nil {
			return
		}
		if strings.Join(segs, "/") != p {
			t.Fatalf("segments %q do not rebuild %q", segs, p)
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || len(s) > maxName || strings.ContainsAny(s, "/\x00") {
				t.Fatalf("unsafe segment %q accepted from %q", s, p)
			}
		}
	})
}
