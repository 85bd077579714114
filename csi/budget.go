package csi

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// Defaults of the node's budgets.
const (
	defaultMaxMemCache    = 1 << 30
	defaultMemoryHeadroom = 384 << 20 // Go heap (soft-limited to 128 MiB), FUSE buffers, page tables
)

// autoCacheSize is the node's disk cache budget when the operator sets
// none: 80% of the space the cache may use, which is the file system's
// free space plus what the cache already holds. Counting the cache's own
// bytes keeps the budget steady across plugin restarts, where free space
// alone would shrink it by what earlier volumes cached.
func autoCacheSize(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("cache dir %s: %w", dir, err)
	}
	used := int64(0)
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file evicted while we walk
		}
		if e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				used += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sizing cache dir %s: %w", dir, err)
	}
	return (int64(st.Bavail)*st.Bsize + used) / 5 * 4, nil
}
