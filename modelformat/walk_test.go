package modelformat

import (
	"errors"
	"io/fs"
	"slices"
	"testing"
	"testing/fstest"
)

// deniedFS is a tree one of whose directories may not be read.
type deniedFS struct {
	fstest.MapFS
	denied string
}

func (f deniedFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name == f.denied {
		return nil, &fs.PathError{Op: "readdirent", Path: name, Err: fs.ErrPermission}
	}
	return f.MapFS.ReadDir(name)
}

// A directory the walk may not read ends it with an error, rather than
// hiding its files.
func TestWalkUnreadableDirectory(t *testing.T) {
	tree := fstest.MapFS{"a.json": {Data: []byte("{}")}, "sub/w.safetensors": {Data: []byte("x")}}
	files, _, err := Tree{Root: tree}.Walk(t.Context())
	if err != nil || len(files) != 2 {
		t.Fatalf("readable tree: %v, %v", files, err)
	}
	if _, _, err := (Tree{Root: deniedFS{tree, "sub"}}).Walk(t.Context()); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("walk: %v, want a permission error", err)
	}
}

// Links in a tree without a known location: relative ones inside it are
// followed, chains are bounded, absolute ones are refused.
func TestWalkLinksInAnFS(t *testing.T) {
	tree := fstest.MapFS{
		"w.bin":      {Data: []byte("12345")},
		"sub/alias":  {Data: []byte("../w.bin"), Mode: fs.ModeSymlink},
		"abs":        {Data: []byte("/etc/passwd"), Mode: fs.ModeSymlink},
		"loop1":      {Data: []byte("loop2"), Mode: fs.ModeSymlink},
		"loop2":      {Data: []byte("loop1"), Mode: fs.ModeSymlink},
		"up":         {Data: []byte("../../w.bin"), Mode: fs.ModeSymlink},
		"sub/nested": {Data: []byte("alias"), Mode: fs.ModeSymlink},
	}
	files, skipped, err := Tree{Root: tree}.Walk(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got, refused []string
	for _, f := range files {
		got = append(got, f.Path+"="+f.Target)
		if f.Size != 5 {
			t.Errorf("%s: %d bytes", f.Path, f.Size)
		}
	}
	for _, s := range skipped {
		refused = append(refused, s.Path)
	}
	if want := []string{"sub/alias=w.bin", "sub/nested=w.bin", "w.bin=w.bin"}; !slices.Equal(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}
	slices.Sort(refused)
	if want := []string{"abs", "loop1", "loop2", "up"}; !slices.Equal(refused, want) {
		t.Errorf("skipped %q, want %q", refused, want)
	}
	if _, err := (Tree{Root: tree}).Resolve("loop1"); !errors.Is(err, ErrRefused) {
		t.Errorf("loop: %v, want ErrRefused", err)
	}
}

// In a snapshot, only links of huggingface_hub's form reach blobs/: one
// that gets there through a detour inside the snapshot is refused, since
// where a detour leads depends on links the rule does not read.
func TestWalkSnapshotLinkForms(t *testing.T) {
	root := fstest.MapFS{
		"a.bin":      {Data: []byte("../../blobs/1"), Mode: fs.ModeSymlink},
		"sub/b.bin":  {Data: []byte("../../../blobs/1"), Mode: fs.ModeSymlink},
		"detour.bin": {Data: []byte("sub/../../../blobs/1"), Mode: fs.ModeSymlink},
		"deep.bin":   {Data: []byte("../../blobs/x/1"), Mode: fs.ModeSymlink},
		"refs.bin":   {Data: []byte("../../refs/main"), Mode: fs.ModeSymlink},
		"sub/x":      {Data: []byte("x")},
	}
	blobs := fstest.MapFS{"1": {Data: []byte("blob")}, "x/1": {Data: []byte("deep")}}
	files, skipped, err := Tree{Root: root, Rev: "r1", Blobs: blobs}.Walk(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got, refused []string
	for _, f := range files {
		got = append(got, f.Path)
		if f.InBlobs && (f.Target != "1" || f.Size != 4) {
			t.Errorf("%s: blob %s of %d bytes", f.Path, f.Target, f.Size)
		}
	}
	for _, s := range skipped {
		refused = append(refused, s.Path)
	}
	slices.Sort(refused)
	if want := []string{"a.bin", "sub/b.bin", "sub/x"}; !slices.Equal(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}
	if want := []string{"deep.bin", "detour.bin", "refs.bin"}; !slices.Equal(refused, want) {
		t.Errorf("skipped %q, want %q", refused, want)
	}
}
