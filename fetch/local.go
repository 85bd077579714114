package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/modelformat/modeldir"
)

// LocalOptions configure a Local source.
type LocalOptions struct {
	// Root is the directory to serve: a path, or a file:// URL.
	Root string
	// Logger, when set, gets a warning for each entry List leaves out
	// (a link the rule refuses, a name that is not UTF-8), so that a
	// missing file has a reason.
	Logger *slog.Logger
}

// Local serves the regular files under a directory. Objects are pinned to
// size and modification time, since a plain file has no better version.
//
// The directory is listed and its links followed by modelformat's one
// model-directory rule (links inside it, and a Hugging Face cache
// snapshot's links into its repository's blobs/). All access goes through
// os.Roots, so no key and no symlink can reach anything else, even if the
// tree changes while it is served.
type Local struct {
	dir  string // absolute, as given (for String)
	tree *modeldir.Dir
	log  *slog.Logger // nil: no warnings
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
	tree, err := modeldir.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("fetch: local source: %w", err)
	}
	return &Local{dir: abs, tree: tree, log: opts.Logger}, nil
}

// Close releases the handles on the directory.
func (l *Local) Close() error { return l.tree.Close() }

// String returns the root as a file:// URL.
func (l *Local) String() string { return "file://" + filepath.ToSlash(l.dir) }

// ID is the cleaned absolute root: the same directory however it was named.
func (l *Local) ID() string { return "file://" + filepath.ToSlash(filepath.Clean(l.dir)) }

// List walks the tree and returns its regular files sorted by key, links
// followed by the model-directory rule; directories reached through links,
// links the rule refuses, sockets, devices and pipes are skipped.
func (l *Local) List(ctx context.Context) ([]Object, error) {
	files, skipped, err := l.tree.Walk(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch: list %s: %w", l, classifyLocal(err))
	}
	if l.log != nil {
		for _, s := range skipped {
			l.log.Warn("object not shown", "key", fmt.Sprintf("%q", s.Path), "reason", s.Reason)
		}
	}
	objs := make([]Object, len(files))
	for i, f := range files {
		objs[i] = Object{Key: f.Path, Size: f.Size, ModTime: f.ModTime}
	}
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
	f, err := l.tree.Resolve(key)
	if err != nil {
		return Object{}, fmt.Errorf("fetch: stat %q: %w", key, classifyLocal(err))
	}
	return Object{Key: key, Size: f.Size, ModTime: f.ModTime}, nil
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
	rf, err := l.tree.Resolve(obj.Key)
	if err != nil {
		return 0, fmt.Errorf("fetch: read %q: %w", obj.Key, classifyLocal(err))
	}
	f, err := l.tree.OpenFile(rf)
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
// neither a permission nor an I/O problem (a link the rule refuses, a
// directory, a special file) counts as not found.
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
