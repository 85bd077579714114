package fs

import (
	"sort"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
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

// Names that are not valid UTF-8, hold C1 controls, or reorder or break
// the text they are shown in would make ls, shells and logs show something
// other than the file's name.
func TestSplitPathRejectsMisleadingNames(t *testing.T) {
	for _, p := range []string{
		"bad\xffutf8", "dir/\xc3", "\xed\xa0\x80surrogate",
		"c1\u0085next", "csi\u009b31m", "c1\u0080",
		"model\u202egnp.exe", "\u202aembed", "isolate\u2066x", "pop\u2069", "mark\u200fx", "alm\u061cx",
		"line\u2028sep", "para\u2029sep",
	} {
		if _, err := splitPath(p); err == nil {
			t.Errorf("splitPath(%q) accepted", p)
		}
	}
	for _, p := range []string{"模型/权重.safetensors", "café/naïve.bin", "a\u00a0b", "emoji-\U0001f999.json"} {
		if _, err := splitPath(p); err != nil {
			t.Errorf("splitPath(%q): %v", p, err)
		}
	}
}

func FuzzSplitPath(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "a//b", "/abs", "a/./b", "ok.json", "a\x00b", "a\xffb", "x\u0085y", "x\u202ey"} {
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
			if s == "" || s == "." || s == ".." || len(s) > maxName || strings.ContainsAny(s, "/\x00") || !utf8.ValidString(s) {
				t.Fatalf("unsafe segment %q accepted from %q", s, p)
			}
			for _, r := range s {
				if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' {
					t.Fatalf("segment %q accepted from %q holds %U", s, p, r)
				}
			}
		}
	})
}
