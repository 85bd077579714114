package gpuwarm

import (
	"errors"
	"fmt"
	"log/slog"
)

// Inventory is what NVML says of the node's GPUs.
type Inventory struct {
	DriverVersion string `json:"driver_version"`
	// CUDADriverVersion is the newest CUDA the driver supports, like "12.4".
	CUDADriverVersion string `json:"cuda_driver_version"`
	GPUs              []GPU  `json:"gpus"`
}

// GPU is one device of the inventory.
type GPU struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	MemoryTotal uint64 `json:"memory_total_bytes"`
	MemoryFree  uint64 `json:"memory_free_bytes"`
	MemoryUsed  uint64 `json:"memory_used_bytes"`
	// Persistence is the persistence mode: "enabled", "disabled", "not
	// supported" or the error reading it.
	Persistence string `json:"persistence_mode"`
	// PersistenceChange is what enabling it did, when asked to: "enabled",
	// "already enabled", "not permitted", "not supported" or the error.
	PersistenceChange string `json:"persistence_change,omitempty"`
	Health            Health `json:"health"`

	dev Device
}

// Health is a GPU's basic memory health. A field is nil when the GPU does
// not report it; Unavailable then says why.
type Health struct {
	// ECCUncorrected counts uncorrected ECC errors since the driver loaded.
	ECCUncorrected *uint64 `json:"ecc_uncorrected_volatile,omitempty"`
	// Page retirement (before Ampere).
	RetiredPages        *int  `json:"retired_pages,omitempty"`
	RetiredPagesPending *bool `json:"retired_pages_pending,omitempty"`
	// Row remapping (Ampere and later).
	RemappedRowsCorrectable   *int  `json:"remapped_rows_correctable,omitempty"`
	RemappedRowsUncorrectable *int  `json:"remapped_rows_uncorrectable,omitempty"`
	RemappedRowsPending       *bool `json:"remapped_rows_pending,omitempty"`
	RemappedRowsFailed        *bool `json:"remapped_rows_failed,omitempty"`
	// Unavailable maps each check the GPU did not answer to the reason,
	// usually "not supported".
	Unavailable map[string]string `json:"unavailable,omitempty"`
	// Problems lists what makes the GPU unfit to serve until it is reset
	// or serviced; empty when healthy.
	Problems []string `json:"problems,omitempty"`
}

// cudaVersion formats NVML's 1000*major+10*minor CUDA version.
func cudaVersion(v int) string {
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10)
}

// takeInventory lists the GPUs lib sees (lib is initialised), turning
// persistence mode on first when enablePersistence. A GPU whose name, UUID
// or memory cannot be read fails the inventory; health checks and
// persistence mode are reported as they come, errors included.
func takeInventory(lib NVML, enablePersistence bool, log *slog.Logger) (*Inventory, error) {
	inv := &Inventory{}
	var err error
	if inv.DriverVersion, err = lib.SystemGetDriverVersion(); err != nil {
		return nil, fmt.Errorf("driver version: %w", err)
	}
	cuda, err := lib.SystemGetCudaDriverVersion()
	if err != nil {
		return nil, fmt.Errorf("CUDA driver version: %w", err)
	}
	inv.CUDADriverVersion = cudaVersion(cuda)
	n, err := lib.DeviceGetCount()
	if err != nil {
		return nil, fmt.Errorf("counting GPUs: %w", err)
	}
	for i := range n {
		g, err := readGPU(lib, i, enablePersistence)
		if err != nil {
			return nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		if g.PersistenceChange != "" && g.PersistenceChange != "enabled" && g.PersistenceChange != "already enabled" {
			log.Warn("persistence mode not enabled", "gpu", i, "uuid", g.UUID, "reason", g.PersistenceChange)
		}
		inv.GPUs = append(inv.GPUs, g)
	}
	return inv, nil
}

func readGPU(lib NVML, i int, enablePersistence bool) (GPU, error) {
	g := GPU{Index: i}
	d, err := lib.DeviceGetHandleByIndex(i)
	if err != nil {
		return g, err
	}
	g.dev = d
	if g.Name, err = d.GetName(); err != nil {
		return g, fmt.Errorf("name: %w", err)
	}
	if g.UUID, err = d.GetUUID(); err != nil {
		return g, fmt.Errorf("UUID: %w", err)
	}
	m, err := d.GetMemoryInfo()
	if err != nil {
		return g, fmt.Errorf("memory: %w", err)
	}
	g.MemoryTotal, g.MemoryFree, g.MemoryUsed = m.Total, m.Free, m.Used

	on, perr := d.GetPersistenceMode()
	g.Persistence = persistenceString(on, perr)
	if enablePersistence {
		switch {
		case perr == nil && on:
			g.PersistenceChange = "already enabled"
		default:
			if err := d.SetPersistenceMode(true); err != nil {
				g.PersistenceChange = reason(err)
			} else {
				g.PersistenceChange = "enabled"
				g.Persistence = persistenceString(d.GetPersistenceMode())
			}
		}
	}
	g.Health = readHealth(d)
	return g, nil
}

func persistenceString(on bool, err error) string {
	switch {
	case err != nil:
		return reason(err)
	case on:
		return "enabled"
	}
	return "disabled"
}

// reason is err as a short word where it is one of the NVML sentinels.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrNotSupported):
		return "not supported"
	case errors.Is(err, ErrNoPermission):
		return "not permitted"
	}
	return err.Error()
}

func readHealth(d Device) Health {
	var h Health
	unavailable := func(check string, err error) {
		if h.Unavailable == nil {
			h.Unavailable = map[string]string{}
		}
		h.Unavailable[check] = reason(err)
	}
	if n, err := d.GetUncorrectedECCErrors(); err != nil {
		unavailable("ecc", err)
	} else {
		h.ECCUncorrected = &n
		if n > 0 {
			h.Problems = append(h.Problems, fmt.Sprintf("%d uncorrected ECC errors since the driver loaded: reset the GPU", n))
		}
	}
	if n, pending, err := d.GetRetiredPages(); err != nil {
		unavailable("retired_pages", err)
	} else {
		h.RetiredPages, h.RetiredPagesPending = &n, &pending
		if pending {
			h.Problems = append(h.Problems, "a page retirement is pending: reset the GPU")
		}
	}
	if corr, unc, pending, failed, err := d.GetRemappedRows(); err != nil {
		unavailable("remapped_rows", err)
	} else {
		h.RemappedRowsCorrectable, h.RemappedRowsUncorrectable = &corr, &unc
		h.RemappedRowsPending, h.RemappedRowsFailed = &pending, &failed
		if pending {
			h.Problems = append(h.Problems, "a row remapping is pending: reset the GPU")
		}
		if failed {
			h.Problems = append(h.Problems, "row remapping failed: the GPU needs service")
		}
	}
	return h
}
