package fs

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// File is one regular file of the mount.
type File struct {
	// Path is '/'-separated and relative to the mount root.
	Path    string
	Size    int64
	ModTime time.Time
	// Content opens readers of the file's bytes.
	Content Opener
}

// Opener opens the content of one file, once per open(2).
type Opener interface {
	Open() Handle
}

// Damager is implemented by an Opener whose content can turn out not to be
// what its store holds. Once Damaged, the kernel's cached pages of the file
// are dropped, so that every read reaches a Handle (which fails it), and
// the failure, logged once where it was found, is not logged per read.
type Damager interface {
	Damaged() bool
}

// Handle reads an open file. ReadAt may be called concurrently and returns
// io.EOF at the end of the file.
type Handle interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Release()
}

// SliceReader is implemented by a Handle that can lend its bytes in place
// rather than copy them: the reply to the kernel is written straight from
// the slices, and release is called once it has been sent.
type SliceReader interface {
	ReadSlices(ctx context.Context, off int64, n int) (slices [][]byte, release func(), err error)
}

// Passthrougher is implemented by a Handle whose bytes all sit verified in
// a local file: the kernel may then read that file directly (FUSE
// passthrough, Linux 6.9+, root) and the Handle sees no reads at all.
type Passthrougher interface {
	PassthroughFd() (fd int, ok bool)
}

// Skipped is a file left out of the tree, with the reason.
type Skipped struct {
	Path   string
	Reason string
}

// maxName is the longest file name Linux accepts (NAME_MAX).
const maxName = 255

// CheckName reports why name cannot be one path segment of the mount (a
// file or directory name), or nil.
func CheckName(name string) error {
	if strings.Contains(name, "/") {
		return fmt.Errorf("contains a '/'")
	}
	_, err := splitPath(name)
	return err
}

// CheckPath reports why p, '/'-separated and relative, cannot be a path
// in the mount, or nil.
func CheckPath(p string) error {
	_, err := splitPath(p)
	return err
}

// splitPath validates a remote key and returns its segments.
func splitPath(p string) ([]string, error) {
	if p == "" {
		return nil, fmt.Errorf("empty name")
	}
	if strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("absolute path")
	}
	segs := strings.Split(p, "/")
	for _, s := range segs {
		switch {
		case s == "":
			return nil, fmt.Errorf("empty path segment")
		case s == "." || s == "..":
			return nil, fmt.Errorf("%q path segment", s)
		case len(s) > maxName:
			return nil, fmt.Errorf("name longer than %d bytes", maxName)
		}
		if err := checkRunes(s); err != nil {
			return nil, err
		}
	}
	return segs, nil
}

// checkRunes rejects names a terminal or a tool would not show as they
// are: invalid UTF-8 (shown as U+FFFD, or as raw bytes some terminals
// act on), C0 and C1 controls (U+009B starts an escape sequence like ESC
// [), bidirectional formatting characters (U+202E makes "gnp.exe" look
// like "exe.png"), and the Unicode line and paragraph separators, which
// split one name over two lines.
func checkRunes(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("name is not valid UTF-8")
	}
	for _, r := range name {
		switch {
		case unicode.IsControl(r): // C0, DEL and C1
			return fmt.Errorf("control character %U in name", r)
		case unicode.Is(unicode.Bidi_Control, r):
			return fmt.Errorf("bidirectional formatting character %U in name", r)
		case r == '\u2028' || r == '\u2029':
			return fmt.Errorf("line or paragraph separator %U in name", r)
		}
	}
	return nil
}

// dirEntry is the tree as plain data, before it becomes inodes.
type dirEntry struct {
	dirs  map[string]*dirEntry
	files map[string]*File
	mtime time.Time // newest mtime below, so ls -l shows something useful
}

func newDirEntry() *dirEntry {
	return &dirEntry{dirs: map[string]*dirEntry{}, files: map[string]*File{}}
}

// buildTree lays files out as directories. Unsafe paths and file/directory
// conflicts are skipped; when a key is both a file and a prefix the
// directory wins, since it holds more of the model.
func buildTree(files []File) (*dirEntry, []Skipped) {
	root := newDirEntry()
	var skipped []Skipped
	type placed struct {
		parent *dirEntry
		name   string
		path   string
	}
	var all []placed
	for i := range files {
		f := &files[i]
		segs, err := splitPath(f.Path)
		if err != nil {
			skipped = append(skipped, Skipped{f.Path, err.Error()})
			continue
		}
		d := root
		for _, s := range segs[:len(segs)-1] {
			child, ok := d.dirs[s]
			if !ok {
				child = newDirEntry()
				d.dirs[s] = child
			}
			if f.ModTime.After(d.mtime) {
				d.mtime = f.ModTime
			}
			d = child
		}
		if f.ModTime.After(d.mtime) {
			d.mtime = f.ModTime
		}
		name := segs[len(segs)-1]
		if _, dup := d.files[name]; dup {
			skipped = append(skipped, Skipped{f.Path, "duplicate name"})
			continue
		}
		d.files[name] = f
		all = append(all, placed{d, name, f.Path})
	}
	for _, p := range all {
		if _, isDir := p.parent.dirs[p.name]; isDir {
			delete(p.parent.files, p.name)
			skipped = append(skipped, Skipped{p.path, "name is also a directory"})
		}
	}
	return root, skipped
}
