package modelformat

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Tree is a model directory, as every user of a local model walks it: the
// mount's local source, pack and gpuwarm.
//
// The symlink rule: a link is followed when what it leads to stays inside
// the model root or, when the root is a Hugging Face cache snapshot
// (<repo>/snapshots/<rev>/, whose files are relative links into
// <repo>/blobs/), when it leads to a file directly in that repository's
// blobs/ the way huggingface_hub writes such links (../ repeated, then
// blobs/<name>). Absolute links count by where they lead (only when Tree.Dir
// says where the root is; without it they are refused). Every other link
// is refused and reported: links that leave the root for anywhere else,
// links to directories (so a loop cannot make a walk endless), dangling
// links and chains of more than maxLinks links. Only regular files are
// listed.
type Tree struct {
	// Root is the model directory. It should implement fs.ReadLinkFS
	// (os.Root.FS does, and also refuses at the system level any path
	// that escapes it); without it links are whatever its Stat makes of
	// them.
	Root fs.FS
	// Dir is where Root is, as an absolute '/'-separated path, for
	// absolute links; "" if unknown.
	Dir string
	// Rev and Blobs are set when Root is the snapshot <repo>/snapshots/Rev
	// of a Hugging Face cache: Blobs is <repo>/blobs.
	Rev   string
	Blobs fs.FS
}

// File is one regular file of a Tree.
type File struct {
	Path    string // '/'-separated, relative to the root
	Size    int64
	ModTime time.Time
	// InBlobs says the bytes are the file Target of Tree.Blobs rather
	// than the file Target of Tree.Root (Target is Path unless links led
	// elsewhere).
	InBlobs bool
	Target  string
}

// Skipped is an entry of a Tree that is not listed, and why.
type Skipped struct {
	Path   string
	Reason string
}

// maxLinks bounds a chain of links, as the kernel's 40 does.
const maxLinks = 40

// ErrRefused is wrapped by Resolve's errors for a link the rule refuses.
var ErrRefused = errors.New("link refused")

// Walk lists the regular files of the tree, sorted by path, and the
// entries it left out, with reasons. Directories are walked, not followed
// through links. An error reading a directory ends the walk; entries that
// vanish while it runs are skipped.
func (t Tree) Walk(ctx context.Context) ([]File, []Skipped, error) {
	var files []File
	var skipped []Skipped
	err := fs.WalkDir(t.Root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// The tree failing to be read (the root, a directory it
			// may not read) ends the walk rather than hiding files; an
			// entry vanishing mid-walk does not.
			if p != "." && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := t.Resolve(p)
		if err != nil {
			skipped = append(skipped, Skipped{p, err.Error()})
			return nil
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("modelformat: walk: %w", err)
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, skipped, nil
}

// Resolve applies the tree's rule to the entry at name ('/'-separated,
// relative to the root) and returns the regular file it is. A link the
// rule refuses yields an error wrapping ErrRefused; an entry that is not
// there, one wrapping fs.ErrNotExist.
func (t Tree) Resolve(name string) (File, error) {
	if !utf8.ValidString(name) {
		// fs.FS paths are UTF-8; a reason that does not repeat the bytes.
		return File{}, fmt.Errorf("name is not valid UTF-8: %w", fs.ErrInvalid)
	}
	if !fs.ValidPath(name) || name == "." {
		return File{}, &fs.PathError{Op: "resolve", Path: name, Err: fs.ErrInvalid}
	}
	cur := name
	for range maxLinks {
		fi, err := fs.Lstat(t.Root, cur)
		if err != nil {
			if cur != name {
				return File{}, fmt.Errorf("%s: link to %s: %w", name, cur, err)
			}
			return File{}, err
		}
		switch {
		case fi.Mode().IsRegular():
			return File{Path: name, Size: fi.Size(), ModTime: fi.ModTime(), Target: cur}, nil
		case fi.IsDir():
			return File{}, fmt.Errorf("%s: %w: link to a directory", name, ErrRefused)
		case fi.Mode()&fs.ModeSymlink == 0:
			return File{}, fmt.Errorf("%s: not a regular file (%s)", name, fi.Mode().Type())
		}
		target, err := fs.ReadLink(t.Root, cur)
		if err != nil {
			return File{}, err
		}
		if path.IsAbs(target) {
			rel, ok := t.relative(target)
			if !ok {
				return File{}, fmt.Errorf("%s: %w: absolute link to %s leaves the model root", name, ErrRefused, target)
			}
			// Now as if the link had been written relative to the root.
			target = strings.Repeat("../", strings.Count(cur, "/")) + rel
		}
		next := path.Join(path.Dir(cur), target)
		if fs.ValidPath(next) && next != "." {
			cur = next
			continue
		}
		if t.Blobs != nil {
			if blob, ok := t.inBlobs(cur, target); ok {
				return t.blob(name, blob)
			}
		}
		return File{}, fmt.Errorf("%s: %w: link to %s leaves the model root", name, ErrRefused, target)
	}
	return File{}, fmt.Errorf("%s: %w: more than %d links in a chain", name, ErrRefused, maxLinks)
}

// relative returns the absolute link target abs relative to the root: a
// path within it, or one that leaves it for the repository's blobs.
func (t Tree) relative(abs string) (string, bool) {
	if t.Dir == "" || !path.IsAbs(t.Dir) {
		return "", false
	}
	abs, dir := path.Clean(abs), path.Clean(t.Dir)
	if rel, ok := strings.CutPrefix(abs, dir+"/"); ok {
		return rel, true
	}
	if t.Blobs != nil {
		repo := path.Dir(path.Dir(dir))
		if blob, ok := strings.CutPrefix(abs, path.Join(repo, "blobs")+"/"); ok {
			return "../../blobs/" + blob, true
		}
	}
	return "", false
}

// inBlobs reports whether the link at cur (in the root), which leaves the
// root, leads to a file directly in the repository's blobs/, and which.
// The target must be as huggingface_hub writes it, ../ repeated then
// blobs/<name>, and the link's directory a real one, so that the ".."s
// count what they appear to.
func (t Tree) inBlobs(cur, target string) (string, bool) {
	rest := target
	for strings.HasPrefix(rest, "../") {
		rest = rest[len("../"):]
	}
	if !strings.HasPrefix(rest, "blobs/") {
		return "", false
	}
	for d := path.Dir(cur); d != "."; d = path.Dir(d) {
		if fi, err := fs.Lstat(t.Root, d); err != nil || !fi.IsDir() {
			return "", false
		}
	}
	rel := path.Join("snapshots", t.Rev, path.Dir(cur), target) // relative to <repo>
	blob, ok := strings.CutPrefix(rel, "blobs/")
	if !ok || !fs.ValidPath(blob) || strings.Contains(blob, "/") {
		return "", false
	}
	return blob, true
}

// blob is the file name of the repository's blobs, for the entry name.
func (t Tree) blob(name, blob string) (File, error) {
	fi, err := fs.Lstat(t.Blobs, blob)
	if err != nil {
		return File{}, fmt.Errorf("%s: link to blob %s: %w", name, blob, err)
	}
	if !fi.Mode().IsRegular() {
		return File{}, fmt.Errorf("%s: %w: blob %s is not a regular file", name, ErrRefused, blob)
	}
	return File{Path: name, Size: fi.Size(), ModTime: fi.ModTime(), InBlobs: true, Target: blob}, nil
}

// Open opens the bytes of f, a file this tree resolved.
func (t Tree) Open(f File) (fs.File, error) {
	if f.InBlobs {
		if t.Blobs == nil {
			return nil, &fs.PathError{Op: "open", Path: f.Path, Err: fs.ErrNotExist}
		}
		return t.Blobs.Open(f.Target)
	}
	return t.Root.Open(f.Target)
}
