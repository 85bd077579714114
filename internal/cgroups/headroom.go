package cgroups

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Headroom is how much more memory this process may use before reclaim
// gets hard: MemAvailable, or less where the limit of its memory cgroup,
// or of one above it, is closer. A CSI volume's mount runs in a cgroup of
// its own with a limit near its RAM cache, which the root of the cgroup
// file system does not show. ok is false when nothing can be read.
func Headroom() (n int64, where string, ok bool) { return headroomAt("/") }

// headroomAt is Headroom with /proc and /sys under root ("/" but in
// tests).
func headroomAt(root string) (n int64, where string, ok bool) {
	if f, err := os.Open(filepath.Join(root, "proc/meminfo")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, found := strings.CutPrefix(sc.Text(), "MemAvailable:"); found {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err == nil {
					n, where, ok = kb*1024, "MemAvailable", true
				}
			}
		}
		f.Close()
	}
	self, err := Self(root)
	if err != nil {
		return n, where, ok
	}
	base, rel, limitFile, usedFile := "sys/fs/cgroup", self.V2Path, "memory.max", "memory.current"
	if self.V1 {
		base, rel, limitFile, usedFile = "sys/fs/cgroup/memory", self.V1Path, "memory.limit_in_bytes", "memory.usage_in_bytes"
	} else if !self.V2 {
		return n, where, ok
	}
	// From the process's own cgroup up to the root of what is mounted:
	// the closest limit binds.
	for rel = path.Clean("/" + rel); ; rel = path.Dir(rel) {
		dir := filepath.Join(root, base, rel)
		if room, ok2 := cgroupRoom(dir, limitFile, usedFile); ok2 && (!ok || room < n) {
			n, where, ok = room, filepath.Join("/", base, rel, limitFile), true
		}
		if rel == "/" {
			return n, where, ok
		}
	}
}

// cgroupRoom is a cgroup's limit less its use; ok is false without a
// limit ("max", or v1's huge number that means none) or a file.
func cgroupRoom(dir, limitFile, usedFile string) (int64, bool) {
	limit, err1 := os.ReadFile(filepath.Join(dir, limitFile))
	used, err2 := os.ReadFile(filepath.Join(dir, usedFile))
	if err1 != nil || err2 != nil {
		return 0, false
	}
	l, err1 := strconv.ParseInt(string(bytes.TrimSpace(limit)), 10, 64) // "max" fails: no limit
	u, err2 := strconv.ParseInt(string(bytes.TrimSpace(used)), 10, 64)
	if err1 != nil || err2 != nil || l >= 1<<62 {
		return 0, false
	}
	return max(l-u, 0), true
}
