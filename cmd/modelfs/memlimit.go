package main

import (
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/modelfs/modelfs/internal/cgroups"
)

// cgroupMemoryLimit returns the memory limit of this process's cgroup, read
// under root ("/" in production, a fake tree in tests): cgroup v2's
// memory.max or v1's memory.limit_in_bytes, the smallest along the path
// from the process's cgroup up to the hierarchy root, since any ancestor
// may be the one that binds. ok is false when there is no limit ("max", v1's
// huge sentinel) or no cgroup file to read.
func cgroupMemoryLimit(root string) (limit int64, ok bool, err error) {
	self, err := cgroups.Self(root)
	if err != nil {
		return 0, false, err
	}
	// v1's memory controller, when present, is the one that limits: on a
	// hybrid host the v2 tree holds no memory controller.
	switch {
	case self.V1:
		return smallestLimit(filepath.Join(root, "sys/fs/cgroup/memory"), self.V1Path, "memory.limit_in_bytes")
	case self.V2:
		return smallestLimit(filepath.Join(root, "sys/fs/cgroup"), self.V2Path, "memory.max")
	}
	return 0, false, nil
}

// smallestLimit reads file in the cgroup directory and each parent up to
// mnt. Without a cgroup namespace the path is the host's and may not exist
// inside a container's mount: the files that do exist still count.
func smallestLimit(mnt, cgPath, file string) (int64, bool, error) {
	var best int64
	found := false
	for p := path.Clean("/" + cgPath); ; p = path.Dir(p) {
		b, err := os.ReadFile(filepath.Join(mnt, filepath.FromSlash(p), file))
		if err == nil {
			s := strings.TrimSpace(string(b))
			if s != "max" {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return 0, false, fmt.Errorf("cgroup %s: %q: %w", file, s, err)
				}
				// v1 reports "no limit" as a page-rounded MaxInt64.
				if n > 0 && n < 1<<60 && (!found || n < best) {
					best, found = n, true
				}
			}
		}
		if p == "/" {
			break
		}
	}
	return best, found, nil
}

// goMemoryLimit is the Go heap's soft limit for a cgroup memory limit: 90%
// of it, so that the runtime collects harder before the kernel's OOM killer
// acts, less offHeap, the bytes modelfs keeps outside the Go heap (RAM
// cache blocks are mmap'ed, and count against the cgroup but not the heap).
// It never goes below a quarter of the limit, so a large cache does not
// make the collector run without pause.
func goMemoryLimit(cgroupLimit, offHeap int64) int64 {
	l := cgroupLimit/10*9 - offHeap
	return max(l, cgroupLimit/4)
}

// mountHeapLimit is a mount's soft Go heap limit when neither GOMEMLIMIT
// nor a cgroup sets one. go-fuse pools its request and reply buffers by
// size, up to 1 MiB each; readers of many different sizes keep many pools
// full, and since pooled buffers look live, the collector's target climbs
// with them (hundreds of MiB under a random-read load). The heap proper (the
// tree, requests in flight) needs far less; the RAM cache is off-heap.
const mountHeapLimit = 128 << 20

// applyMemoryLimit sets the Go memory limit from the cgroup, unless
// GOMEMLIMIT is set (the runtime has applied that already, and a person's
// choice wins). fallback, when not 0, caps the limit, and applies alone
// when there is no cgroup limit.
func applyMemoryLimit(log *slog.Logger, offHeap, fallback int64) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		log.Debug("memory limit from GOMEMLIMIT", "bytes", debug.SetMemoryLimit(-1))
		return
	}
	limit, ok, err := cgroupMemoryLimit("/")
	if err != nil || !ok {
		if fallback > 0 {
			debug.SetMemoryLimit(fallback)
		}
		log.Debug("no cgroup memory limit", "go_limit_bytes", debug.SetMemoryLimit(-1), "err", err)
		return
	}
	l := goMemoryLimit(limit, offHeap)
	if fallback > 0 {
		l = min(l, fallback) // a roomy cgroup does not make pools cheap
	}
	debug.SetMemoryLimit(l)
	log.Debug("Go memory limit set from the cgroup", "cgroup_bytes", limit, "off_heap_bytes", offHeap, "go_limit_bytes", l)
}
