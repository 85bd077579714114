//go:build cgo

package gpuwarm

import (
	"encoding/json"
	"errors"
	"testing"
)

// TestRealNVML runs the inventory against the machine's own driver, and
// skips where there is none (CI). On a GPU machine it checks what any
// working driver must answer.
func TestRealNVML(t *testing.T) {
	lib := NewNVML()
	if err := lib.Init(); errors.Is(err, ErrNoDriver) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	inv, err := takeInventory(lib, false, discard)
	if err != nil {
		t.Fatal(err)
	}
	if inv.DriverVersion == "" || inv.CUDADriverVersion == "0.0" || len(inv.GPUs) == 0 {
		t.Fatalf("inventory %+v", inv)
	}
	for _, g := range inv.GPUs {
		if g.Name == "" || g.UUID == "" || g.MemoryTotal == 0 || g.MemoryFree > g.MemoryTotal {
			t.Errorf("GPU %+v", g)
		}
		// As JSON: the health fields are pointers (nil: not reported).
		health, err := json.Marshal(g.Health)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("GPU %d: %s %s, %s free of %s, persistence %s, health %s", g.Index, g.Name, g.UUID,
			formatBytes(int64(g.MemoryFree)), formatBytes(int64(g.MemoryTotal)), g.Persistence, health)
	}
	t.Logf("driver %s, CUDA %s", inv.DriverVersion, inv.CUDADriverVersion)
}
