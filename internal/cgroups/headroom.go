package cgroups

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Headroom is how much more memory this process may use before
// reclaim gets hard: MemAvailable, or less where a cgroup v2 limit is
// closer. ok is false when neither can be read.
func Headroom() (n int64, where string, ok bool) {
	if f, err := os.Open("/proc/meminfo"); err == nil {
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
	limit, err1 := os.ReadFile("/sys/fs/cgroup/memory.max")
	used, err2 := os.ReadFile("/sys/fs/cgroup/memory.current")
	if err1 == nil && err2 == nil {
		l, err1 := strconv.ParseInt(string(bytes.TrimSpace(limit)), 10, 64) // "max" fails: no limit
		u, err2 := strconv.ParseInt(string(bytes.TrimSpace(used)), 10, 64)
		if err1 == nil && err2 == nil && (!ok || l-u < n) {
			n, where, ok = l-u, "the cgroup's memory.max", true
		}
	}
	return n, where, ok
}
