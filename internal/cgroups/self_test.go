package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSelf(t *testing.T) {
	cases := []struct {
		name, file string
		want       Memory
	}{
		{"v2 only", "0::/kubepods/pod1/c1\n", Memory{V2Path: "/kubepods/pod1/c1", V2: true}},
		{"v1 memory among others", "5:cpu,cpuacct:/a\n4:memory:/process/x\n0::/\n",
			Memory{V1Path: "/process/x", V1: true, V2Path: "/", V2: true}},
		{"memory inside a joined list", "3:blkio,memory:/m\n", Memory{V1Path: "/m", V1: true}},
		{"a named hierarchy is not memory", "9:name=systemd:/\n1:memoryx:/no\n", Memory{}},
		{"garbage lines", "nonsense\n\n2:x\n", Memory{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "proc/self"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "proc/self/cgroup"), []byte(c.file), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := Self(root)
			if err != nil || got != c.want {
				t.Fatalf("Self = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	if _, err := Self(t.TempDir()); err == nil {
		t.Fatal("no /proc/self/cgroup: want an error")
	}
}
