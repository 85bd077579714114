package mount

import (
	"log/slog"
	"os"
	"syscall"

	"github.com/modelfs/modelfs/blockcache"
)

// defaultDiskCache is what the cache already holds plus 80% of the free
// space where it lives: counting only free space, a mount on a full cache
// would shrink it to nothing and evict what the node's other mounts read.
func defaultDiskCache(dir string, log *slog.Logger) int64 {
	var st syscall.Statfs_t
	if err := os.MkdirAll(dir, 0o700); err != nil { // private, as the cache makes it
		return 0
	}
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	held, err := blockcache.HeldBytes(dir, log)
	if err != nil {
		log.Warn("could not measure the disk cache; sizing it from free space alone", "dir", dir, "err", err)
	}
	return autoDiskCache(held, int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize)
}

// autoDiskCache is held plus 80% of free, never more than the filesystem.
func autoDiskCache(held, free, total int64) int64 {
	return min(held+free/5*4, total)
}
