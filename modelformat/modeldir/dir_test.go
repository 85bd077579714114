package modeldir

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/modelfs/modelfs/modelformat"
	"github.com/modelfs/modelfs/tests/modelgen"
)

func TestHFCacheSnapshot(t *testing.T) {
	c, err := modelgen.WriteHFCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(c.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Blobs == nil || d.Rev != filepath.Base(c.Snapshot) {
		t.Fatalf("%s not opened as a snapshot: rev %q", c.Snapshot, d.Rev)
	}
	files, skipped, err := d.Walk(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Path)
		want, ok := c.Files[f.Path]
		if !ok {
			continue
		}
		if f.Size != int64(len(want)) {
			t.Errorf("%s: %d bytes, want %d", f.Path, f.Size, len(want))
		}
		r, err := d.Open(f) // through the fs.FS, as any Tree
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if p := d.FilePath(f); f.InBlobs != (filepath.Base(filepath.Dir(p)) == "blobs") {
			t.Errorf("%s: bytes at %s, in blobs: %v", f.Path, p, f.InBlobs)
		}
		if err != nil || !bytes.Equal(data, want) {
			t.Errorf("%s reads %q, %v; want %q", f.Path, data, err, want)
		}
	}
	if want := slices.Sorted(maps.Keys(c.Files)); !slices.Equal(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
	var refused []string
	for _, s := range skipped {
		refused = append(refused, s.Path)
		t.Logf("skipped %s: %s", s.Path, s.Reason)
	}
	slices.Sort(refused)
	if want := slices.Sorted(slices.Values(c.Refused)); !slices.Equal(refused, want) {
		t.Fatalf("skipped %q, want %q", refused, want)
	}
	for _, name := range c.Refused {
		if _, err := d.Resolve(name); err == nil {
			t.Errorf("Resolve(%s) followed a link the rule refuses", name)
		}
	}
	if _, err := d.Resolve("ref"); !errors.Is(err, modelformat.ErrRefused) {
		t.Errorf("Resolve(ref): %v, want ErrRefused", err)
	}
	if _, err := d.Resolve("nothing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Resolve(nothing): %v, want not found", err)
	}
}

// A plain directory is not a snapshot: links into a blobs/ beside it
// leave it and are refused; absolute links into it are followed.
func TestPlainDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "model")
	for p, data := range map[string]string{"model/a.json": "{}", "blobs/b": "blob", "model/sub/c": "c"} {
		p = filepath.Join(base, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("../blobs/b", filepath.Join(dir, "rel-out"))
	os.Symlink(filepath.Join(dir, "sub", "c"), filepath.Join(dir, "abs-in"))
	os.Symlink(filepath.Join(base, "blobs", "b"), filepath.Join(dir, "abs-out"))
	os.Symlink("../a.json", filepath.Join(dir, "sub", "up"))
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Blobs != nil {
		t.Fatal("a plain directory opened as a snapshot")
	}
	files, skipped, err := d.Walk(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got, refused []string
	for _, f := range files {
		got = append(got, f.Path+"="+f.Target)
	}
	for _, s := range skipped {
		refused = append(refused, s.Path)
	}
	slices.Sort(refused)
	if want := []string{"a.json=a.json", "abs-in=sub/c", "sub/c=sub/c", "sub/up=a.json"}; !slices.Equal(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}
	if want := []string{"abs-out", "rel-out"}; !slices.Equal(refused, want) {
		t.Errorf("skipped %q, want %q", refused, want)
	}
	if _, err := Open(filepath.Join(dir, "a.json")); err == nil {
		t.Error("a file opened as a model directory")
	}
}
