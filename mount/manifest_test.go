package mount

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fs"
)

var (
	sumA = strings.Repeat("ab", 32)
	sumB = strings.Repeat("0c", 32)
)

func TestParseManifest(t *testing.T) {
	data := `{
	  "llama-13b": {"source": "s3://bucket/llama-13b", "size": "26GB", "format": "huggingface",
	                "sha256": {"model-00001-of-00002.safetensors": "` + strings.ToUpper(sumA) + `", "sub/config.json": "` + sumB + `"}},
	  "tiny": {"source": "https://host/tiny.gguf", "format": "GGUF", "sha256": "` + sumA + `", "size": 1048576},
	  "local": {"source": "file:///models/local"}
	}`
	specs, err := parseManifest("models.json", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 3 || specs[0].Name != "llama-13b" || specs[1].Name != "tiny" || specs[2].Name != "local" {
		t.Fatalf("models %+v, want llama-13b, tiny, local in file order", specs)
	}
	l := specs[0]
	if l.Source != "s3://bucket/llama-13b" || l.Size != 26e9 || l.Format != "huggingface" || l.SHA256 != "" ||
		len(l.Files) != 2 || l.Files["model-00001-of-00002.safetensors"] != sumA || l.Files["sub/config.json"] != sumB {
		t.Errorf("llama-13b parsed as %+v", l)
	}
	if tiny := specs[1]; tiny.Size != 1<<20 || tiny.Format != "gguf" || tiny.SHA256 != sumA || tiny.Files != nil {
		t.Errorf("tiny parsed as %+v", tiny)
	}
	if loc := specs[2]; loc.Size != 0 || loc.Format != "" || loc.SHA256 != "" || loc.Files != nil {
		t.Errorf("local parsed as %+v", loc)
	}
}

func TestParseManifestErrorsNameTheEntry(t *testing.T) {
	ok := `"source": "s3://bucket/x"`
	for _, tc := range []struct {
		name, data string
		want       []string
	}{
		{"not JSON", `{"a": `, []string{"unexpected end"}},
		{"not an object", `["a"]`, []string{"want a JSON object"}},
		{"trailing data", `{"a": {` + ok + `}} {}`, []string{"after the JSON object"}},
		{"no models", `{}`, []string{"no models"}},
		{"entry not an object", `{"a": "s3://bucket/x"}`, []string{`model "a"`, "want an object"}},
		{"unknown field", `{"a": {` + ok + `, "sizee": "1GB"}}`, []string{`model "a"`, `unknown field "sizee"`}},
		{"missing source", `{"a": {"size": "1GB"}}`, []string{`model "a"`, "source: missing"}},
		{"empty source", `{"a": {"source": ""}}`, []string{`model "a"`, "source: empty"}},
		{"source not a string", `{"a": {"source": 3}}`, []string{`model "a"`, "source: want a string, not a number"}},
		{"bad scheme", `{"a": {"source": "ftp://bucket/x"}}`, []string{`model "a"`, "unknown scheme"}},
		{"not a URI", `{"a": {"source": "bucket/x"}}`, []string{`model "a"`, "not a URI"}},
		{"parent name", `{"..": {` + ok + `}}`, []string{`model ".."`, "name"}},
		{"name with a slash", `{"a/b": {` + ok + `}}`, []string{`model "a/b"`, "name"}},
		{"empty name", `{"": {` + ok + `}}`, []string{`model ""`, "name"}},
		{"control character", `{"a\u0007": {` + ok + `}}`, []string{`model "a\a"`, "name"}},
		{"reserved name", `{".modelfs-stats": {` + ok + `}}`, []string{`model ".modelfs-stats"`, "reserved"}},
		{"named twice", `{"a": {` + ok + `}, "a": {` + ok + `}}`, []string{`model "a"`, "twice"}},
		{"bad size", `{"a": {` + ok + `, "size": "big"}}`, []string{`model "a"`, `size "big"`}},
		{"zero size", `{"a": {` + ok + `, "size": "0"}}`, []string{`model "a"`, "size"}},
		{"negative size", `{"a": {` + ok + `, "size": -5}}`, []string{`model "a"`, "size"}},
		{"size not a size", `{"a": {` + ok + `, "size": true}}`, []string{`model "a"`, "size"}},
		{"bad format", `{"a": {` + ok + `, "format": "pytorch"}}`, []string{`model "a"`, `format "pytorch"`, "huggingface"}},
		{"short sha256", `{"a": {` + ok + `, "sha256": "abc"}}`, []string{`model "a"`, "sha256", "64 hex"}},
		{"sha256 not hex", `{"a": {` + ok + `, "sha256": "` + strings.Repeat("zz", 32) + `"}}`, []string{`model "a"`, "sha256"}},
		{"sha256 a number", `{"a": {` + ok + `, "sha256": 12}}`, []string{`model "a"`, "sha256"}},
		{"sha256 empty object", `{"a": {` + ok + `, "sha256": {}}}`, []string{`model "a"`, "sha256: empty"}},
		{"sha256 bad file hash", `{"a": {` + ok + `, "sha256": {"f.bin": "nope"}}}`, []string{`model "a"`, `file "f.bin"`}},
		{"sha256 unsafe path", `{"a": {` + ok + `, "sha256": {"../f.bin": "` + sumA + `"}}}`, []string{`model "a"`, `file "../f.bin"`}},
		{"second entry bad", `{"a": {` + ok + `}, "b": {"source": "ftp://x/y"}}`, []string{`model "b"`, "unknown scheme"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			specs, err := parseManifest("models.json", []byte(tc.data))
			if err == nil {
				t.Fatalf("accepted: %+v", specs)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "manifest models.json: ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line starting with the manifest's name", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

func TestReadManifestMissingFile(t *testing.T) {
	if _, err := readManifest("/nonexistent/models.json"); err == nil || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("missing manifest: %v", err)
	}
}

// FuzzParseManifest: no input panics, and whatever is accepted is safe to
// mount: valid names, parseable sources, well-formed hashes.
func FuzzParseManifest(f *testing.F) {
	for _, s := range []string{
		`{"a": {"source": "s3://bucket/x"}}`,
		`{"llama": {"source": "s3://b/l", "size": "26GB", "format": "huggingface", "sha256": {"f": "` + sumA + `"}}}`,
		`{"t": {"source": "https://h/t.gguf", "sha256": "` + sumB + `", "size": 12}}`,
		`{"a": {"source": "file:///d"}, "b": {"source": "file:///e", "format": "gguf"}}`,
		`{"..": {"source": "s3://b/x"}}`, `{"a": {"source": ""}}`, `{"a": null}`, `{"a": {"source": null}}`,
		`{"a": {"source": "s3://b/x", "sha256": {"../x": "00"}}}`, `[]`, `{}`, `{"a":`, `null`, `{"a": {}} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		specs, err := parseManifest("m.json", data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if len(specs) == 0 {
			t.Fatal("accepted a manifest with no models")
		}
		names := map[string]bool{}
		for _, s := range specs {
			if fs.CheckName(s.Name) != nil || s.Name == fs.StatsName || names[s.Name] {
				t.Fatalf("accepted model name %q", s.Name)
			}
			names[s.Name] = true
			if _, err := fetch.ParseLocation(s.Source); err != nil {
				t.Fatalf("model %q: accepted source %q: %v", s.Name, s.Source, err)
			}
			if s.Size < 0 {
				t.Fatalf("model %q: size %d", s.Name, s.Size)
			}
			if _, ok := modelFormats[s.Format]; s.Format != "" && !ok {
				t.Fatalf("model %q: format %q", s.Name, s.Format)
			}
			if s.SHA256 != "" && s.Files != nil {
				t.Fatalf("model %q: both one hash and hashes by file", s.Name)
			}
			sums := []string{s.SHA256}
			for p, sum := range s.Files {
				if fs.CheckPath(p) != nil {
					t.Fatalf("model %q: accepted hash for path %q", s.Name, p)
				}
				sums = append(sums, sum)
			}
			for _, sum := range sums {
				if b, err := hex.DecodeString(sum); sum != "" && (err != nil || len(b) != 32 || sum != strings.ToLower(sum)) {
					t.Fatalf("model %q: accepted sha256 %q", s.Name, sum)
				}
			}
		}
	})
}
