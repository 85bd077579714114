package main

import (
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/internal/units"
)

// parseSize reads sizes like 8MiB, 1.5GB, 4096 or 64k (k/m/g are binary).
// A bad value of a command-line flag (a name starting "--") is a usage
// error; one read from a file is not.
func parseSize(s, flag string) (int64, error) {
	n, err := units.ParseSize(s, flag)
	if err != nil && strings.HasPrefix(flag, "--") {
		return 0, usageError{err}
	}
	return n, err
}

func formatSize(n int64) string { return units.FormatSize(n) }

// sizeOrAuto parses a size flag whose value may be "auto".
func sizeOrAuto(s, flag string, auto func() int64) (int64, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return auto(), nil
	}
	return parseSize(s, flag)
}

// defaultMemCache is an eighth of physical memory, between 256 MiB and
// 1 GiB. The RAM tier is a staging area for prefetch (the kernel's page
// cache keeps what was read), and a small one reuses its buffers: a large
// one spends its first pass faulting in fresh memory.
func defaultMemCache() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 1 << 30
	}
	total := int64(si.Totalram) * int64(si.Unit)
	return min(max(total/8, 256<<20), 1<<30)
}

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
