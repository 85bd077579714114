package main

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// fakeTree writes files (path -> content) under a temporary root.
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		want    int64
		ok, err bool
	}{
		{"v2 number", map[string]string{
			"proc/self/cgroup":                       "0::/kubepods/pod1\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max": "1073741824\n",
			"sys/fs/cgroup/kubepods/memory.max":      "max\n",
		}, 1 << 30, true, false},
		{"v2 parent binds", map[string]string{
			"proc/self/cgroup":             "0::/a/b\n",
			"sys/fs/cgroup/a/b/memory.max": "max\n",
			"sys/fs/cgroup/a/memory.max":   "536870912\n",
		}, 512 << 20, true, false},
		{"v2 max", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "max\n",
		}, 0, false, false},
		{"v2 namespaced path missing, root file used", map[string]string{
			"proc/self/cgroup":         "0::/host/path/not/mounted\n",
			"sys/fs/cgroup/memory.max": "2147483648\n",
		}, 2 << 30, true, false},
		{"v1", map[string]string{
			"proc/self/cgroup": "12:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n0::/\n",
			"sys/fs/cgroup/memory/docker/x/memory.limit_in_bytes": "268435456\n",
		}, 256 << 20, true, false},
		{"v1 unlimited", map[string]string{
			"proc/self/cgroup":                           "4:memory:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, false, false},
		{"no cgroup files", map[string]string{
			"proc/self/cgroup": "0::/x\n",
		}, 0, false, false},
		{"no /proc/self/cgroup", map[string]string{}, 0, false, true},
		{"garbage", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "lots\n",
		}, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := cgroupMemoryLimit(fakeTree(t, tc.files))
			if got != tc.want || ok != tc.ok || (err != nil) != tc.err {
				t.Fatalf("= %d, %v, %v; want %d, %v, error %v", got, ok, err, tc.want, tc.ok, tc.err)
			}
		})
	}
}

func TestGoMemoryLimit(t *testing.T) {
	if got := goMemoryLimit(10<<30, 0); got != 10<<30/10*9 {
		t.Errorf("no off-heap: %d", got)
	}
	if got := goMemoryLimit(10<<30, 1<<30); got != 10<<30/10*9-1<<30 {
		t.Errorf("1GiB off-heap: %d", got)
	}
	if got := goMemoryLimit(1<<30, 1<<30); got != 1<<30/4 {
		t.Errorf("cache as large as the limit: %d, want the quarter floor", got)
	}
}

// TestMountHeapLimitCaps: a mount's fallback caps the Go limit whether or
// not the cgroup sets one.
func TestMountHeapLimitCaps(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	debug.SetMemoryLimit(math.MaxInt64)
	applyMemoryLimit(slog.New(slog.DiscardHandler), 0, 100<<20)
	if got := debug.SetMemoryLimit(-1); got > 100<<20 {
		t.Fatalf("Go memory limit %d, want at most %d", got, 100<<20)
	}
	// Without a fallback and without a cgroup limit, nothing is set.
	debug.SetMemoryLimit(math.MaxInt64)
	applyMemoryLimit(slog.New(slog.DiscardHandler), 0, 0)
	if _, ok, _ := cgroupMemoryLimit("/"); !ok {
		if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
			t.Fatalf("Go memory limit %d set without a cgroup limit or a fallback", got)
		}
	}
}
