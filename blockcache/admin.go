package blockcache

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"
)

// CachedObject describes one object in a disk cache directory.
type CachedObject struct {
	Name, Version string
	Size          int64
	BlockSize     int64
	CachedBytes   int64 // bytes of blocks present
	DiskBytes     int64 // space the data file occupies
	LastUse       time.Time
	dir           string
}

// Complete reports whether every block is present.
func (o CachedObject) Complete() bool { return o.CachedBytes == o.Size }

// ListDisk describes every object in a disk cache directory, most recently
// used first. It reads records only; it changes nothing, except that a
// damaged or absurd object is dropped, with a line to log (nil: none).
func ListDisk(dir string, log *slog.Logger) ([]CachedObject, error) {
	t, err := openAdmin(dir, log)
	if err != nil {
		return nil, err
	}
	defer t.close()
	t.mu.Lock()
	defer t.mu.Unlock()
	byID := map[string]*CachedObject{}
	for e := t.lru.Front(); e != nil; e = e.Next() {
		d := e.Value.(*diskEntry)
		c, ok := byID[d.obj.id]
		if !ok {
			c = describe(t, d.obj)
			byID[d.obj.id] = c
		}
		c.CachedBytes += d.n
	}
	for id, o := range t.objs {
		if _, ok := byID[id]; !ok {
			byID[id] = describe(t, o)
		}
	}
	out := make([]CachedObject, 0, len(byID))
	for _, c := range byID {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUse.After(out[j].LastUse) })
	return out, nil
}

func describe(t *diskTier, o *diskObject) *CachedObject {
	c := &CachedObject{Name: o.hdr.Name, Version: o.hdr.Version, Size: o.hdr.Size, BlockSize: o.hdr.BlockSize,
		dir: filepath.Join(t.root, o.id)}
	if st, err := o.meta.Stat(); err == nil {
		c.LastUse = st.ModTime()
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(o.data.Fd()), &st) == nil {
		c.DiskBytes = st.Blocks * 512
	}
	return c
}

// Drop removes the cached objects for which match returns true and
// returns them. Objects in use through passthrough are skipped.
func Drop(dir string, log *slog.Logger, match func(CachedObject) bool) ([]CachedObject, error) {
	objs, err := ListDisk(dir, log)
	if err != nil {
		return nil, err
	}
	t, err := openAdmin(dir, log)
	if err != nil {
		return nil, err
	}
	defer t.close()
	var dropped []CachedObject
	for _, o := range objs {
		if !match(o) {
			continue
		}
		t.mu.Lock()
		obj := t.objs[filepath.Base(o.dir)]
		lock, ok := (*os.File)(nil), obj != nil
		if ok {
			lock, ok = t.evictionLock(obj)
		}
		t.mu.Unlock()
		if !ok {
			continue
		}
		// A mount with the files open goes on reading the unlinked inodes,
		// which stay whole; its next open of the object starts afresh.
		err := os.RemoveAll(o.dir)
		lock.Close()
		if err != nil {
			return dropped, fmt.Errorf("dropping %s: %w", o.Name, err)
		}
		dropped = append(dropped, o)
	}
	return dropped, nil
}

// GC evicts least recently used blocks until the cache holds at most
// maxBytes, and returns the bytes it holds then.
func GC(dir string, log *slog.Logger, maxBytes int64) (int64, error) {
	t, err := openAdmin(dir, log)
	if err != nil {
		return 0, err
	}
	defer t.close()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.max = maxBytes
	t.makeRoom(0)
	return t.used, nil
}

// HeldBytes returns the bytes of blocks a disk cache directory holds now
// (0 for a directory that is not a cache yet), so that a budget derived
// from free space can count them as the cache's own.
func HeldBytes(dir string, log *slog.Logger) (int64, error) {
	if _, err := os.Stat(filepath.Join(dir, diskVersionDir)); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	t, err := openAdmin(dir, log)
	if err != nil {
		return 0, err
	}
	defer t.close()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.used, nil
}

// openAdmin opens an existing cache directory for the operator commands.
func openAdmin(dir string, log *slog.Logger) (*diskTier, error) {
	if _, err := os.Stat(filepath.Join(dir, diskVersionDir)); err != nil {
		return nil, fmt.Errorf("%s is not a modelfs cache directory: %w", dir, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return openDiskTier(DiskOptions{Dir: dir, MaxBytes: 1 << 62}, 0, log)
}
