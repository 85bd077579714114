package csi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRoot is a file tree standing in for / : /proc/self/cgroup and a
// cgroup mount.
func fakeRoot(t *testing.T, self string, files map[string]string) string {
	root := t.TempDir()
	files["proc/self/cgroup"] = self
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestMemcgV2Delegates(t *testing.T) {
	// A container in its own cgroup namespace: / is its cgroup, holding
	// the plugin's processes, with memory available but not yet enabled
	// for children.
	root := fakeRoot(t, "0::/\n", map[string]string{
		"sys/fs/cgroup/cgroup.controllers":     "cpu io memory pids\n",
		"sys/fs/cgroup/cgroup.subtree_control": "\n",
		"sys/fs/cgroup/cgroup.procs":           "1\n7\n",
	})
	m, err := newMemcg(root)
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(root, "sys/fs/cgroup")
	if !m.v2 || m.parent != cg {
		t.Fatalf("memcg %+v", m)
	}
	// The plugin's processes moved to a leaf, then memory was enabled.
	if b, _ := os.ReadFile(filepath.Join(cg, "modelfs-plugin/cgroup.procs")); string(b) != "7" {
		t.Errorf("leaf cgroup.procs holds %q, want the last pid written", b)
	}
	if b, _ := os.ReadFile(filepath.Join(cg, "cgroup.subtree_control")); string(b) != "+memory" {
		t.Errorf("subtree_control: %q", b)
	}
	// A restarted server, now in the leaf, delegates from the same place.
	os.WriteFile(filepath.Join(root, "proc/self/cgroup"), []byte("0::/modelfs-plugin\n"), 0o644)
	os.WriteFile(filepath.Join(cg, "cgroup.subtree_control"), []byte("memory\n"), 0o644)
	if again, err := newMemcg(root); err != nil || again.parent != cg {
		t.Fatalf("after a restart: %+v, %v; want the parent %s", again, err, cg)
	}
	dir, err := m.create("abc", 300<<20)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "memory.max")); string(b) != "314572800" {
		t.Errorf("memory.max: %q", b)
	}
}

func TestMemcgUnavailable(t *testing.T) {
	root := fakeRoot(t, "0::/\n", map[string]string{
		"sys/fs/cgroup/cgroup.controllers":     "cpu pids\n",
		"sys/fs/cgroup/cgroup.subtree_control": "\n",
	})
	if _, err := newMemcg(root); err == nil || !strings.Contains(err.Error(), "not delegated") {
		t.Fatalf("newMemcg without a memory controller: %v", err)
	}
	if err := removeCgroup(filepath.Join(root, "sys/fs/cgroup")); err != nil {
		t.Fatalf("removeCgroup touched a directory it did not make: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "sys/fs/cgroup")); err != nil {
		t.Fatal("removeCgroup removed a directory it did not make")
	}
}
