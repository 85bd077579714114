package fetch

import "testing"

// Manifests come from the remote side: whatever they hold, parsing must not
// panic, and every path it accepts must be safe to request and to show.
func FuzzParseManifests(f *testing.F) {
	for _, s := range []string{
		`["config.json","model-00001-of-00002.safetensors"]`,
		`{"files":[{"path":"a/b.bin","size":12}]}`,
		`{"weight_map":{"x":"model-00001.safetensors","y":"model-00002.safetensors"},"metadata":{}}`,
		`["../etc/passwd"]`, `{"files":[{"path":"/abs"}]}`, `[null]`, `{"weight_map":{"x":"a\u0000b"}}`,
		`[`, `{}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, parse := range []func([]byte) ([]httpEntry, error){parseModelfsManifest, parseHFIndex} {
			entries, err := parse(b)
			if err != nil {
				continue
			}
			for _, e := range entries {
				if err := checkHTTPPath(e.key); err != nil {
					t.Fatalf("accepted unsafe path %q: %v", e.key, err)
				}
			}
		}
	})
}
