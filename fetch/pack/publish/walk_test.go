package publish

import (
	"bytes"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/tests/modelgen"
)

// Walk reads a Hugging Face cache snapshot as the mount's local source
// does: its files through the links into blobs/, and no link that leaves
// for anywhere else, each of which it names in a warning.
func TestWalkHFCacheSnapshot(t *testing.T) {
	c, err := modelgen.WriteHFCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	files, err := Walk(c.Snapshot, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, f := range files {
		got[f.Key] = f.Size
		data, err := os.ReadFile(f.Path)
		if err != nil || !bytes.Equal(data, c.Files[f.Key]) {
			t.Errorf("%s (%s) reads %q, %v; want %q", f.Key, f.Path, data, err, c.Files[f.Key])
		}
	}
	want := map[string]int64{}
	for k, v := range c.Files {
		want[k] = int64(len(v))
	}
	if !maps.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	if !slices.IsSortedFunc(files, func(a, b SrcFile) int { return strings.Compare(a.Key, b.Key) }) {
		t.Errorf("files not sorted by key: %v", files)
	}
	for _, name := range c.Refused {
		if !strings.Contains(logs.String(), "file="+name+" ") {
			t.Errorf("no warning names the refused link %s:\n%s", name, logs.String())
		}
	}
}
