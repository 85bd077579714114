package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// LocalOptions configure a Local source.
type LocalOptions struct {
	// Root is the directory to serve: a path, or a file:// URL.
	Root string
}

// Local serves the regular files under a directory. Objects are pinned to
// size and modification time, since a plain file has no better version.
//
// All access goes through an os.Root, so no key and no symlink can reach
// outside the directory, even if the tree changes while it is served.
type Local struct {
	dir  string // absolute, as given (for String)
	root *os.Root
}

var _ Source = (*Local)(nil)

// NewLocal opens opts.Root. It fails if Root is missing or not a directory.
// Close releases the directory handle.
func NewLocal(opts LocalOptions) (*Local, error) {
	dir := strings.TrimPrefix(opts.Root, "file://")
	if dir == "" {
		return nil, errors.New("fetch: local source: no root directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fetch: local source %q: %w", dir, err)
	}
	// os.Stat errors already name the path.
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("fetch: local source: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("fetch: local source %q is not a directory", abs)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("fetch: local source: %w", err)
	}
	return &Local{dir: abs, root: root}, nil
}

// Close releases the handle on the root directory.
func (l *Local) Close() error { return l.root.Close() }

// String returns the root as a file:// URL.
func (l *Local) String() string { return "file://" + filepath.ToSlash(l.dir) }

// ID is the cleaned absolute root: the same directory however it was named.
func (l *Local) ID() string { return "file://" + filepath.ToSlash(filepath.Clean(l.dir)) }

// List walks the tree and returns its regular files sorted by key. Symlinks
// are followed only when they resolve to a regular file inside the root;
// directories reached through symlinks, sockets, devices and pipes are
// skipped.
func (l *Local) List(ctx context.Context) ([]Object, error) {
	var objs []Object
	err := fs.WalkDir(l.root.FS(), ".", func(key string, d fs.DirEntry, err error) error {
		if err != nil {
			// The root itself failing is fatal; an entry vanishing
			// mid-walk is not.
			if key != "." && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		var fi fs.FileInfo
		switch t := d.Type(); {
		case t.IsRegular():
			fi, err = d.Info()
		case t&fs.ModeSymlink != 0:
			// Root.Stat refuses links that escape the root.
			fi, err = l.root.Stat(key)
		default:
			return nil
		}
		if err != nil || !fi.Mode().IsRegular() {
			return nil // dangling, escaping, or not a file
		}
		objs = append(objs, Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fetch: list %s: %w", l, classifyLocal(err))
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// Stat returns the current version of the file at key.
func (l *Local) Stat(ctx context.Context, key string) (Object, error) {
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if err := checkLocalKey(key); err != nil {
		return Object{}, fmt.Errorf("fetch: stat %q: %w", key, err)
	}
	fi, err := l.root.Stat(key)
	if err != nil {
		return Object{}, fmt.Errorf("fetch: stat %q: %w", key, classifyLocal(err))
	}
	if !fi.Mode().IsRegular() {
		return Object{}, fmt.Errorf("fetch: stat %q: %w (not a regular file)", key, ErrNotFound)
	}
	return Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// ReadAt reads from the file named by obj.Key after checking, on the open
// handle, that its size and mtime are still the pinned ones. The file is
// opened per call: an open is cheap next to the block-sized reads callers
// make, and it means a file replaced by rename is noticed too.
func (l *Local) ReadAt(ctx context.Context, obj Object, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	want, atEnd, err := clipRead(obj, len(p), off)
	if err != nil {
		return 0, err
	}
	if err := checkLocalKey(obj.Key); err != nil {
		return 0, fmt.Errorf("fetch: read %q: %w", obj.Key, err)
	}
	f, err := l.root.Open(obj.Key)
	if err != nil {
		return 0, fmt.Errorf("fetch: read %q: %w", obj.Key, classifyLocal(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("fetch: read %q: %w", obj.Key, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != obj.Size || !fi.ModTime().Equal(obj.ModTime) {
		return 0, fmt.Errorf("fetch: read %q: %w (now %d bytes, modified %s)",
			obj.Key, ErrChanged, fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
	}
	n, err := f.ReadAt(p[:want], off)
	if n < want {
		// The size matched a moment ago, so a short read means the file
		// is being rewritten under us.
		if err == nil || err == io.EOF {
			err = ErrChanged
		}
		return 0, fmt.Errorf("fetch: read %q [%d, %d): %w", obj.Key, off, off+int64(want), err)
	}
	if atEnd {
		return n, io.EOF
	}
	return n, nil
}

// checkLocalKey rejects keys that are not plain relative '/'-separated paths:
// empty, absolute, with empty, "." or ".." segments, or with NUL.
func checkLocalKey(key string) error {
	if key == "" || strings.ContainsRune(key, 0) || !fs.ValidPath(key) || key == "." ||
		!filepath.IsLocal(filepath.FromSlash(key)) {
		return fmt.Errorf("%w (invalid key)", ErrNotFound)
	}
	return nil
}

// classifyLocal maps filesystem errors onto the package's sentinels. Root
// reports an escaping path with an unexported error, so everything that is
// neither a permission nor an I/O problem counts as not found.
func classifyLocal(err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w (%w)", ErrAccess, err)
	case errors.Is(err, syscall.EIO), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	default:
		return fmt.Errorf("%w (%w)", ErrNotFound, err)
	}
}
