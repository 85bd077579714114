package gpuwarm

import (
	"bytes"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/modelfs/modelfs/modelformat/loadorder"
	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/mountproc"
)

func TestModelFiles(t *testing.T) {
	dir := t.TempDir()
	for path, data := range map[string]string{
		"config.json":               "{}",
		"sub/tokenizer.json":        "[]",
		".gitattributes":            "*",
		".cache/huggingface/x.lock": "",
		"blobs/abc":                 "linked",
	} {
		p := filepath.Join(dir, path)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(filepath.Join(dir, "blobs/abc"), filepath.Join(dir, "model.bin"))
	os.Symlink(filepath.Join(dir, "missing"), filepath.Join(dir, "dangling"))
	os.Symlink(filepath.Join(dir, "sub"), filepath.Join(dir, "sublink"))
	files, err := modelFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	want := []string{"blobs/abc", "config.json", "model.bin", "sub/tokenizer.json"}
	if !slices.Equal(paths, want) {
		t.Fatalf("files %v, want %v", paths, want)
	}
	f := files[2]
	r, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.(io.Closer).Close()
	buf := make([]byte, f.Size)
	if _, err := r.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, []byte("linked")) {
		t.Errorf("model.bin reads %q, %v", buf, err)
	}
	if _, err := modelFiles(filepath.Join(dir, "config.json")); err == nil {
		t.Error("a file accepted as the model directory")
	}
}

func TestProfilePlan(t *testing.T) {
	dir := t.TempDir()
	files := []loadorder.File{{Path: "a.safetensors", Size: 1000}, {Path: "b.safetensors", Size: 50}}
	prof := filepath.Join(dir, "load.profile")
	f, err := os.Create(prof)
	if err != nil {
		t.Fatal(err)
	}
	err = loadorder.WriteProfile(f, []loadorder.Entry{
		{Path: "b.safetensors", Version: "v1", Off: 0, Len: 100},   // cut at the end
		{Path: "gone.safetensors", Version: "v1", Off: 0, Len: 8},  // dropped
		{Path: "a.safetensors", Version: "v9", Off: 500, Len: 10},  // version not compared
		{Path: "a.safetensors", Version: "v9", Off: 2000, Len: 10}, // past the end: dropped
	})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	plan, dropped, err := profilePlan(prof, files)
	if err != nil {
		t.Fatal(err)
	}
	want := []loadorder.Range{{Path: "b.safetensors", Off: 0, Len: 50}, {Path: "a.safetensors", Off: 500, Len: 10}}
	if !slices.Equal(plan, want) || dropped != 2 {
		t.Errorf("plan %v (dropped %d), want %v (2)", plan, dropped, want)
	}
	os.WriteFile(prof, []byte("not a profile"), 0o644)
	if _, _, err := profilePlan(prof, files); err == nil {
		t.Error("garbage accepted as a profile")
	}
}

// TestRunProfileOrder: with a profile, the pins follow it, not the layers.
func TestRunProfileOrder(t *testing.T) {
	dir := t.TempDir()
	offsets, _ := testModel(t, dir, layeredModel)
	ps := int64(os.Getpagesize())
	head := offsets["lm_head.weight"]
	prof := filepath.Join(t.TempDir(), "load.profile")
	f, _ := os.Create(prof)
	err := loadorder.WriteProfile(f, []loadorder.Entry{{Path: "model.safetensors", Version: "x", Off: head, Len: tensorPages * ps}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	w := New(Options{Model: dir, PinBytes: 1 << 30, Profile: prof, Log: discard})
	defer w.Close()
	rep, err := w.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pin.From != "profile "+prof || rep.Pin.Bytes != tensorPages*ps {
		t.Fatalf("pin %+v", rep.Pin)
	}
	model := filepath.Join(dir, "model.safetensors")
	mountproc.DropCache(t, model)
	res := mountproc.Resident(t, model)
	if !res[head/ps] || !res[head/ps+tensorPages-1] {
		t.Error("lm_head not resident")
	}
	if evictable(t, dir) && res[offsets["model.embed_tokens.weight"]/ps] {
		t.Error("embeddings resident: pinned in layer order, not the profile's")
	}

	// A bad profile falls back to layer order.
	os.WriteFile(prof, []byte("garbage"), 0o644)
	w2 := New(Options{Model: dir, PinBytes: ps, Profile: prof, Log: discard})
	defer w2.Close()
	if rep, err := w2.Run(t.Context()); err != nil || rep.Pin.From != "layer order" {
		t.Fatalf("bad profile: %v, %+v", err, rep.Pin)
	}
}

// A Hugging Face cache snapshot is planned as its files, read through the
// links into its repository's blobs/; links the model-directory rule
// refuses are left out.
func TestModelFilesHFCacheSnapshot(t *testing.T) {
	c, err := modelgen.WriteHFCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files, err := modelFiles(c.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, f := range files {
		got[f.Path] = f.Size
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, f.Size)
		_, err = r.ReadAt(buf, 0)
		r.(io.Closer).Close()
		if err != nil || !bytes.Equal(buf, c.Files[f.Path]) {
			t.Errorf("%s reads %q, %v; want %q", f.Path, buf, err, c.Files[f.Path])
		}
	}
	want := map[string]int64{}
	for k, v := range c.Files {
		want[k] = int64(len(v))
	}
	if !maps.Equal(got, want) {
		t.Fatalf("files %v, want %v (refused: %q)", got, want, c.Refused)
	}
	plan, err := loadorder.Plan(files, loadorder.PlanOptions{SmallFile: 64})
	if err != nil {
		t.Fatal(err)
	}
	if n := tensorBytes(plan); n != 4 {
		t.Errorf("plan holds %d tensor bytes, want the 4 of model.safetensors", n)
	}
}
