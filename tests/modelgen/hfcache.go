package modelgen

import (
	"fmt"
	"os"
	"path/filepath"
)

// HFCache is a Hugging Face cache repository written by WriteHFCache.
type HFCache struct {
	// Snapshot is <repo>/snapshots/<rev>, the directory users point at.
	Snapshot string
	// Files are the snapshot's files as a walk that follows the links
	// into blobs/ sees them: path relative to Snapshot → content.
	Files map[string][]byte
	// Refused are the snapshot's links that leave it for anywhere other
	// than the repository's blobs/, to a directory, or to nothing.
	Refused []string
}

// WriteHFCache writes, under dir, a repository laid out as huggingface_hub
// caches one: content-addressed files in blobs/, refs/main, and a snapshot
// whose files are relative links into ../../blobs/ (from a subdirectory,
// ../../../blobs/), plus a link inside the snapshot, and links that a walk
// must refuse: to refs/ (outside the snapshot, not a blob), to another
// snapshot, to an absolute path outside, to a directory, and to a missing
// blob.
func WriteHFCache(dir string) (*HFCache, error) {
	repo := filepath.Join(dir, "models--org--model")
	const rev = "0123456789abcdef0123456789abcdef01234567"
	snap := filepath.Join(repo, "snapshots", rev)
	other := filepath.Join(repo, "snapshots", "fedcba9876543210fedcba9876543210fedcba98")
	c := &HFCache{Snapshot: snap, Files: map[string][]byte{}}
	blobs := map[string][]byte{
		"config.json":         []byte(`{"architectures":["LlamaForCausalLM"]}`),
		"model.safetensors":   safetensorsBytes(),
		"tokenizer/vocab.txt": []byte("<s>\n</s>\nhello\n"),
	}
	for _, d := range []string{filepath.Join(repo, "blobs"), filepath.Join(repo, "refs"), filepath.Join(snap, "tokenizer"), other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	i := 0
	for name, data := range blobs {
		blob := fmt.Sprintf("%064x", i+1)
		i++
		if err := os.WriteFile(filepath.Join(repo, "blobs", blob), data, 0o644); err != nil {
			return nil, err
		}
		up := "../../"
		if filepath.Dir(name) != "." {
			up = "../../../"
		}
		if err := os.Symlink(up+"blobs/"+blob, filepath.Join(snap, name)); err != nil {
			return nil, err
		}
		c.Files[name] = data
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(rev), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(other, "x.json"), []byte("{}"), 0o644); err != nil {
		return nil, err
	}
	links := map[string]string{
		"alias.json":     "config.json",                                        // inside: followed
		"ref":            "../../refs/main",                                    // leaves for refs/
		"other.json":     "../fedcba9876543210fedcba9876543210fedcba98/x.json", // another snapshot
		"abs":            filepath.Join(repo, "refs", "main"),                  // absolute, outside
		"tokenizer-link": "tokenizer",                                          // a directory
		"missing.bin":    "../../blobs/" + fmt.Sprintf("%064x", 99),            // dangling
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(snap, name)); err != nil {
			return nil, err
		}
		if name == "alias.json" {
			c.Files[name] = blobs["config.json"]
		} else {
			c.Refused = append(c.Refused, name)
		}
	}
	return c, nil
}

// safetensorsBytes is a small valid safetensors file.
func safetensorsBytes() []byte {
	const hdr = `{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`
	b := []byte{byte(len(hdr)), 0, 0, 0, 0, 0, 0, 0}
	b = append(b, hdr...)
	return append(b, 1, 2, 3, 4)
}
