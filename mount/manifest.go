package mount

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/internal/units"
)

// modelFormats are the formats a manifest entry may declare, with the file
// a model of that format has. A model that has none gets a warning.
var modelFormats = map[string]struct {
	what string
	has  func(key string) bool
}{
	"huggingface": {"a config.json", func(k string) bool { return path.Base(k) == "config.json" }},
	"safetensors": {"a .safetensors file", func(k string) bool { return strings.HasSuffix(k, ".safetensors") }},
	"gguf":        {"a .gguf file", func(k string) bool { return strings.HasSuffix(k, ".gguf") }},
}

// maxManifest bounds the manifest file; a ConfigMap holds at most 1 MiB.
const maxManifest = 16 << 20

// modelSpec is one model to serve: a manifest entry, or the SOURCE
// argument of a single-source command (Name "").
type modelSpec struct {
	Name   string
	Source string
	// Size is the size the manifest gives, 0 if none.
	Size int64
	// Format is "" or one of modelFormats.
	Format string
	// SHA256 is the hash of a single-file model; Files maps file paths,
	// relative to the model, to hashes. At most one is set; hashes are
	// 64 lower-case hex digits.
	SHA256 string
	Files  map[string]string
}

// readManifest reads and checks a manifest file.
func readManifest(file string) ([]modelSpec, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", file, err)
	}
	if len(data) > maxManifest {
		return nil, fmt.Errorf("manifest %s: larger than %d bytes", file, maxManifest)
	}
	return parseManifest(file, data)
}

// parseManifest checks every entry and returns the models in file order.
// Each error is one line naming the file and, where it is one entry's
// fault, the entry.
func parseManifest(file string, data []byte) ([]modelSpec, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("manifest %s: %s", file, fmt.Sprintf(format, args...))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fail("want a JSON object mapping model names to {\"source\": ...}%s", cause(err))
	}
	var specs []modelSpec
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fail("%v", jsonCause(err))
		}
		name, _ := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fail("model %q: %v", name, jsonCause(err))
		}
		if seen[name] {
			return nil, fail("model %q: named twice", name)
		}
		seen[name] = true
		spec, err := parseModel(name, raw)
		if err != nil {
			return nil, fail("model %q: %v", name, err)
		}
		specs = append(specs, spec)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fail("%v", jsonCause(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fail("unexpected data after the JSON object")
	}
	if len(specs) == 0 {
		return nil, fail("no models")
	}
	return specs, nil
}

// parseModel checks one manifest entry.
func parseModel(name string, raw json.RawMessage) (modelSpec, error) {
	spec := modelSpec{Name: name}
	if err := fs.CheckName(name); err != nil {
		return spec, fmt.Errorf("name: want a single safe path segment: %v", err)
	}
	if name == fs.StatsName {
		return spec, fmt.Errorf("name: %s is reserved for the mount's stats file", fs.StatsName)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return spec, errors.New(`want an object such as {"source": "s3://bucket/prefix"}`)
	}
	var e struct {
		Source *string          `json:"source"`
		Size   *json.RawMessage `json:"size"`
		Format *string          `json:"format"`
		SHA256 *json.RawMessage `json:"sha256"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return spec, jsonCause(err)
	}
	if e.Source == nil {
		return spec, errors.New("source: missing")
	}
	spec.Source = *e.Source
	if strings.TrimSpace(spec.Source) == "" {
		return spec, errors.New("source: empty")
	}
	if _, err := fetch.ParseLocation(spec.Source); err != nil {
		return spec, err // names the source already
	}
	if e.Size != nil {
		size, err := parseManifestSize(*e.Size)
		if err != nil {
			return spec, err
		}
		spec.Size = size
	}
	if e.Format != nil {
		spec.Format = strings.ToLower(*e.Format)
		if _, ok := modelFormats[spec.Format]; !ok {
			return spec, fmt.Errorf("format %q: want huggingface, safetensors or gguf", *e.Format)
		}
	}
	if e.SHA256 != nil {
		if err := parseManifestSums(*e.SHA256, &spec); err != nil {
			return spec, err
		}
	}
	return spec, nil
}

// parseManifestSize takes "26GB", "1.5GiB", "4096" or a JSON number.
func parseManifestSize(raw json.RawMessage) (int64, error) {
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return 0, fmt.Errorf("size %s: want a string such as \"26GB\" or a number of bytes", raw)
		}
		text = n.String()
	}
	size, err := units.ParseSize(text, "size")
	if err != nil {
		return 0, err
	}
	if size <= 0 {
		return 0, fmt.Errorf("size %q: want more than 0 bytes", text)
	}
	return size, nil
}

// parseManifestSums takes one hash, or an object of file path to hash.
func parseManifestSums(raw json.RawMessage, spec *modelSpec) error {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		sum, err := checkSHA256(one)
		if err != nil {
			return fmt.Errorf("sha256: %v", err)
		}
		spec.SHA256 = sum
		return nil
	}
	var files map[string]string
	if err := json.Unmarshal(raw, &files); err != nil || files == nil {
		return errors.New("sha256: want 64 hex digits, or an object mapping file paths to them")
	}
	if len(files) == 0 {
		return errors.New("sha256: empty object")
	}
	spec.Files = make(map[string]string, len(files))
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first bad one in a stable order
	for _, k := range keys {
		if err := fs.CheckPath(k); err != nil {
			return fmt.Errorf("sha256: file %q: %v", k, err)
		}
		sum, err := checkSHA256(files[k])
		if err != nil {
			return fmt.Errorf("sha256: file %q: %v", k, err)
		}
		spec.Files[k] = sum
	}
	return nil
}

func checkSHA256(s string) (string, error) {
	sum := strings.ToLower(strings.TrimSpace(s))
	if _, err := hex.DecodeString(sum); err != nil || len(sum) != 64 {
		return "", fmt.Errorf("%q: want 64 hex digits", s)
	}
	return sum, nil
}

// jsonCause drops the "json: " prefix the decoder puts on its errors, and
// says type errors without Go's names.
func jsonCause(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("unexpected end of JSON")
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%s: want a %s, not a %s", te.Field, te.Type.Kind(), te.Value)
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: "); ok {
		return errors.New(msg)
	}
	return err
}

func cause(err error) string {
	if err == nil {
		return ""
	}
	return ": " + jsonCause(err).Error()
}

// expectedSums returns the manifest's hashes by mount path, checked
// against the listing: a single hash needs a single-file model, and every
// file named must exist.
func expectedSums(models []*modelSource) (map[string]fileSum, error) {
	out := map[string]fileSum{}
	for _, m := range models {
		spec := m.spec
		switch {
		case spec.SHA256 != "":
			if len(m.objs) != 1 {
				return nil, fmt.Errorf("model %q: sha256 is one hash but the source has %d files; give an object of file path to hash", spec.Name, len(m.objs))
			}
			out[m.path(m.objs[0].Key)] = fileSum{model: spec.Name, file: m.objs[0].Key, sum: spec.SHA256}
		case spec.Files != nil:
			keys := map[string]bool{}
			for _, o := range m.objs {
				keys[o.Key] = true
			}
			for k, sum := range spec.Files {
				if !keys[k] {
					return nil, fmt.Errorf("model %q: sha256: no file %q in %s", spec.Name, k, m.src)
				}
				out[m.path(k)] = fileSum{model: spec.Name, file: k, sum: sum}
			}
		}
	}
	return out, nil
}

// fileSum is an expected sha256 and where it came from, for messages.
type fileSum struct {
	model, file, sum string
}
