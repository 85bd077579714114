package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/modelfs/modelfs/tests/modelgen"
)

// load reads config.json, the index and every shard the index names, and
// nothing else: not a file the index leaves out.
func TestLoadReadsWhatTheIndexNames(t *testing.T) {
	dir := t.TempDir()
	if _, err := modelgen.Generate(dir, modelgen.Options{TotalBytes: 4 << 20, Shards: 3, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	// A file beside the checkpoint, as a GGUF copy is: never read.
	if err := os.WriteFile(filepath.Join(dir, "model-bf16.gguf"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, name := range []string{"config.json", safetensorsIndex, "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		want += st.Size()
	}
	got, err := loadLikeTransformers(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("load read %d bytes, want %d: the config, the index and the three shards", got, want)
	}
	if err := os.Remove(filepath.Join(dir, safetensorsIndex)); err != nil {
		t.Fatal(err)
	}
	if _, err := loadLikeTransformers(t.Context(), dir); err == nil {
		t.Fatal("load without an index succeeded")
	}
}
