package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

// writeTree writes files (path relative to root → content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHeadroomTakesTheClosestLimit(t *testing.T) {
	const gib = 1 << 30
	cases := []struct {
		name  string
		files map[string]string
		want  int64
		where string
	}{
		{"memory only", map[string]string{
			"proc/meminfo": "MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n",
		}, 4 * gib, "MemAvailable"},
		{"a volume's own v2 cgroup, below a looser one", map[string]string{
			"proc/meminfo":                                      "MemAvailable: 4194304 kB\n",
			"proc/self/cgroup":                                  "0::/plugin/modelfs-vol-a\n",
			"sys/fs/cgroup/memory.max":                          "max\n",
			"sys/fs/cgroup/memory.current":                      "1000\n",
			"sys/fs/cgroup/plugin/memory.max":                   "2147483648\n",
			"sys/fs/cgroup/plugin/memory.current":               "1073741824\n",
			"sys/fs/cgroup/plugin/modelfs-vol-a/memory.max":     "600\n",
			"sys/fs/cgroup/plugin/modelfs-vol-a/memory.current": "400\n",
		}, 200, "/sys/fs/cgroup/plugin/modelfs-vol-a/memory.max"},
		{"a parent's limit closer than the own one", map[string]string{
			"proc/self/cgroup":                        "0::/plugin/vol\n",
			"sys/fs/cgroup/plugin/memory.max":         "1000\n",
			"sys/fs/cgroup/plugin/memory.current":     "900\n",
			"sys/fs/cgroup/plugin/vol/memory.max":     "max\n",
			"sys/fs/cgroup/plugin/vol/memory.current": "50\n",
		}, 100, "/sys/fs/cgroup/plugin/memory.max"},
		{"v1, no limit set", map[string]string{
			"proc/meminfo":     "MemAvailable: 1024 kB\n",
			"proc/self/cgroup": "4:memory:/x\n",
			"sys/fs/cgroup/memory/x/memory.limit_in_bytes": "9223372036854771712\n",
			"sys/fs/cgroup/memory/x/memory.usage_in_bytes": "10\n",
		}, 1 << 20, "MemAvailable"},
		{"v1 limit", map[string]string{
			"proc/meminfo":     "MemAvailable: 1024 kB\n",
			"proc/self/cgroup": "4:memory:/x\n",
			"sys/fs/cgroup/memory/x/memory.limit_in_bytes": "5000\n",
			"sys/fs/cgroup/memory/x/memory.usage_in_bytes": "6000\n",
		}, 0, "/sys/fs/cgroup/memory/x/memory.limit_in_bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, c.files)
			n, where, ok := headroomAt(root)
			if !ok || n != c.want || where != c.where {
				t.Fatalf("headroom = %d from %q (%v); want %d from %q", n, where, ok, c.want, c.where)
			}
		})
	}
	if _, _, ok := headroomAt(t.TempDir()); ok {
		t.Fatal("nothing to read: want ok false")
	}
}
