package mount

import (
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/modelfs/modelfs/blockcache"
)

// sourceLoader feeds the block cache from the sources, by pinned object.
// It is a blockcache.PartLoader: when the cache asks, it loads a block as
// several ranged GETs at once (see blockcache.PartLoader for when).
type sourceLoader struct {
	files map[string]remoteFile // by path; written before the mount, read-only after
}

func (l *sourceLoader) LoadBlock(ctx context.Context, id blockcache.ObjectID, off int64, p []byte) error {
	return l.LoadBlockParts(ctx, id, off, p, 1)
}

// LoadBlockParts reads p from off in parts GETs run in parallel. If one
// fails, the others are cancelled and the load fails.
func (l *sourceLoader) LoadBlockParts(ctx context.Context, id blockcache.ObjectID, off int64, p []byte, parts int) error {
	f, ok := l.files[id.Name]
	if !ok || f.obj.Version() != id.Version {
		return fmt.Errorf("object %q version %s is not part of this mount", id.Name, id.Version)
	}
	if parts <= 1 || len(p) < parts {
		return readFull(ctx, f, off, p)
	}
	g, ctx := errgroup.WithContext(ctx)
	size := (len(p) + parts - 1) / parts
	for lo := 0; lo < len(p); lo += size {
		hi := min(lo+size, len(p))
		g.Go(func() error { return readFull(ctx, f, off+int64(lo), p[lo:hi]) })
	}
	return g.Wait()
}

// readFull reads all of p from off; reaching the object's end with p full
// is no error.
func readFull(ctx context.Context, f remoteFile, off int64, p []byte) error {
	n, err := f.model.src.ReadAt(ctx, f.obj, p, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
		return err
	}
	return nil
}
