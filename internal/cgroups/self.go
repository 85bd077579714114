package cgroups

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Memory is where this process's memory is accounted: a cgroup v1 memory
// controller path, or a cgroup v2 path, as /proc/self/cgroup names them
// (relative to each hierarchy's mount).
type Memory struct {
	V1Path string // with V1: the path in the v1 memory hierarchy
	V2Path string // with V2: the path in the unified hierarchy
	V1, V2 bool
}

// Self reads /proc/self/cgroup under root ("/" but in tests). On a hybrid
// host both may be set; v1's memory controller is then the one that
// accounts, since the v2 tree holds no memory controller.
func Self(root string) (Memory, error) {
	self, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return Memory{}, fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	var m Memory
	sc := bufio.NewScanner(bytes.NewReader(self))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			m.V2Path, m.V2 = parts[2], true
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			m.V1Path, m.V1 = parts[2], true
		}
	}
	return m, nil
}
