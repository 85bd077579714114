package csi

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/modelfs/modelfs/internal/cgroups"
)

// volumeCgroupPrefix names the cgroups the plugin creates, one per volume.
const volumeCgroupPrefix = "modelfs-vol-"

// pluginLeaf is the v2 cgroup the plugin's own processes move to, so that
// their cgroup may hand the memory controller to volume cgroups.
const pluginLeaf = "modelfs-plugin"

// memcg puts each mount process in a cgroup of its own with a memory
// limit, under the plugin's own cgroup: one volume's RAM cache and buffers
// cannot grow into its neighbours' share of the plugin container.
type memcg struct {
	parent string // the directory volume cgroups are made in
	v2     bool
}

// newMemcg finds a memory controller the plugin may delegate from: cgroup
// v2 (unified, /sys/fs/cgroup) when its memory controller can be enabled
// for children, else cgroup v1's memory hierarchy. root is "/" but in
// tests. The error says why there is none.
func newMemcg(root string) (*memcg, error) {
	self, err := cgroups.Self(root)
	if err != nil {
		return nil, err
	}
	// A v1 memory controller is the one that accounts: on a hybrid host
	// the v2 tree has no memory controller.
	switch {
	case self.V1:
		dir := ownCgroup(filepath.Join(root, "sys/fs/cgroup/memory"), self.V1Path)
		if err := writable(dir); err != nil {
			return nil, fmt.Errorf("cgroup v1 memory controller at %s: %w", dir, err)
		}
		return &memcg{parent: dir}, nil
	case self.V2:
		dir := ownCgroup(filepath.Join(root, "sys/fs/cgroup"), self.V2Path)
		if filepath.Base(dir) == pluginLeaf {
			// A restarted plugin server, in the leaf an earlier one
			// made: delegate from the same cgroup, not a nested one.
			dir = filepath.Dir(dir)
		}
		if err := delegateMemory(dir); err != nil {
			return nil, fmt.Errorf("cgroup v2 at %s: %w", dir, err)
		}
		return &memcg{parent: dir, v2: true}, nil
	}
	return nil, errors.New("no cgroup memory controller")
}

// ownCgroup is the plugin's cgroup directory under mnt. Inside a cgroup
// namespace, or a container that mounts only its own subtree, the path
// /proc/self/cgroup names is not under mnt: mnt itself is the plugin's.
func ownCgroup(mnt, cgPath string) string {
	dir := filepath.Join(mnt, filepath.FromSlash(path.Clean("/"+cgPath)))
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir
	}
	return mnt
}

func writable(dir string) error {
	probe := filepath.Join(dir, volumeCgroupPrefix+"probe")
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.Remove(probe)
}

// delegateMemory enables the v2 memory controller for dir's children. A
// v2 cgroup that hands controllers to children may hold no processes
// itself, so the plugin's own processes move to a leaf first.
func delegateMemory(dir string) error {
	ctrl, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	if !slices.Contains(strings.Fields(string(ctrl)), "memory") {
		return errors.New("the memory controller is not delegated to the plugin's cgroup")
	}
	sub, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	if slices.Contains(strings.Fields(string(sub)), "memory") {
		return nil
	}
	leaf := filepath.Join(dir, pluginLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return err
	}
	for _, pid := range strings.Fields(string(procs)) {
		// A process that exited meanwhile is no obstacle.
		if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(pid), 0); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("moving the plugin's processes to %s: %w", leaf, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		return fmt.Errorf("enabling the memory controller: %w", err)
	}
	return nil
}

// create makes the cgroup for the volume keyed key with a memory limit,
// and returns its directory.
func (m *memcg) create(key string, limit int64) (string, error) {
	dir := filepath.Join(m.parent, volumeCgroupPrefix+key)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("creating cgroup: %w", err)
	}
	file := "memory.limit_in_bytes"
	if m.v2 {
		file = "memory.max"
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("setting the cgroup's memory limit: %w", err)
	}
	return dir, nil
}

// join moves pid into the cgroup dir.
func joinCgroup(dir string, pid int) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("moving the mount process into its cgroup: %w", err)
	}
	return nil
}

// removeCgroup removes a volume's cgroup once its process is gone. Only
// directories the plugin made are touched.
func removeCgroup(dir string) error {
	if dir == "" || !strings.HasPrefix(filepath.Base(dir), volumeCgroupPrefix) {
		return nil
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing cgroup %s: %w", dir, err)
	}
	return nil
}
