package modeldir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/modelfs/modelfs/modelformat"
)

// Dir is an open model directory.
type Dir struct {
	modelformat.Tree
	// Path is the directory, absolute and cleaned.
	Path        string
	blobsPath   string // <repo>/blobs of a snapshot
	root, blobs *os.Root
}

// Open opens the model directory dir. It fails if dir is missing or not a
// directory. Close releases it.
func Open(dir string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory %q: %w", dir, err)
	}
	fi, err := os.Stat(abs) // its errors name the path
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("model directory %s: not a directory", abs)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	d := &Dir{Path: abs, root: root, Tree: modelformat.Tree{Root: root.FS(), Dir: filepath.ToSlash(abs)}}
	if repo, rev, ok := snapshot(abs); ok {
		blobs, err := os.OpenRoot(filepath.Join(repo, "blobs"))
		if err != nil {
			root.Close()
			return nil, fmt.Errorf("model directory %s: a Hugging Face cache snapshot: %w", abs, err)
		}
		d.blobs, d.blobsPath, d.Tree.Rev, d.Tree.Blobs = blobs, filepath.Join(repo, "blobs"), rev, blobs.FS()
	}
	return d, nil
}

// snapshot reports whether dir is a Hugging Face cache snapshot,
// <repo>/snapshots/<rev> with a <repo>/blobs directory beside it.
func snapshot(dir string) (repo, rev string, ok bool) {
	parent := filepath.Dir(dir)
	if filepath.Base(parent) != "snapshots" {
		return "", "", false
	}
	repo = filepath.Dir(parent)
	if fi, err := os.Stat(filepath.Join(repo, "blobs")); err != nil || !fi.IsDir() {
		return "", "", false
	}
	return repo, filepath.Base(dir), true
}

// OpenFile opens the bytes of f, a file of this directory, as an *os.File.
func (d *Dir) OpenFile(f modelformat.File) (*os.File, error) {
	r := d.root
	if f.InBlobs {
		r = d.blobs
	}
	if r == nil {
		return nil, fmt.Errorf("open %s: %w", f.Path, os.ErrNotExist)
	}
	return r.Open(f.Target)
}

// FilePath is where the bytes of f, a file of this directory, are: a
// path with no link in its last element, for callers that open files by
// name after the directory is closed.
func (d *Dir) FilePath(f modelformat.File) string {
	if f.InBlobs {
		return filepath.Join(d.blobsPath, filepath.FromSlash(f.Target))
	}
	return filepath.Join(d.Path, filepath.FromSlash(f.Target))
}

// Close releases the directory handles.
func (d *Dir) Close() error {
	var errs []error
	errs = append(errs, d.root.Close())
	if d.blobs != nil {
		errs = append(errs, d.blobs.Close())
	}
	return errors.Join(errs...)
}
