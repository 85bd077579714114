package mount

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelfs/modelfs/mount/config"
)

// writeShardedModel writes two safetensors shards and the index that
// lists them.
func writeShardedModel(t *testing.T, dir string) {
	t.Helper()
	weights := map[string]string{}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("model-%05d-of-00002.safetensors", i)
		writeSafetensors(t, filepath.Join(dir, name), 2, 24<<10)
		for l := range 2 {
			for _, w := range []string{"self_attn.q_proj", "mlp.up_proj"} {
				weights[fmt.Sprintf("model.layers.%d.%s.weight", l, w)] = name
			}
		}
	}
	index, err := json.Marshal(map[string]any{"weight_map": weights})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), index, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A loader that opens the checkpoint's index loads every shard: the plan
// is followed across the shards from the first, even when the index was
// opened before the plan was made (and whether or not its reads reach
// the mount: a file complete on disk is passed through).
func TestOpeningTheIndexMakesTheLoadWhole(t *testing.T) {
	for _, open := range []bool{false, true} {
		t.Run(fmt.Sprintf("index opened %v", open), func(t *testing.T) {
			dir := t.TempDir()
			writeShardedModel(t, dir)
			// 384 KiB shards: past SmallFile, so they are planned.
			e := newTestEngine(t, dir, func(c *config.Config) { c.SmallFile = 64 << 10 })
			if open {
				e.pf.opener(e.pf.files["model.safetensors.index.json"]).Open().Release()
			}
			e.StartPrefetch(t.Context())
			f := e.pf.groupOf["model.safetensors.index.json"].follower.Load()
			if f == nil {
				t.Fatal("no plan was made")
			}
			if f.Whole() != open {
				t.Fatalf("whole-model load: %v, want %v", f.Whole(), open)
			}
		})
	}
}
