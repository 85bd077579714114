package gpuwarm

import "errors"

// NVML is the part of the NVIDIA Management Library gpuwarm uses. NewNVML
// returns the real library; tests wrap go-nvml's mocks. Methods return
// errors that wrap ErrNoDriver, ErrNotSupported or ErrNoPermission where
// NVML says so.
type NVML interface {
	Init() error
	Shutdown() error
	DeviceGetCount() (int, error)
	DeviceGetHandleByIndex(i int) (Device, error)
	SystemGetDriverVersion() (string, error)
	// SystemGetCudaDriverVersion is the CUDA version the driver supports,
	// as 1000*major + 10*minor (12040 is 12.4).
	SystemGetCudaDriverVersion() (int, error)
}

// Device is one GPU as NVML shows it.
type Device interface {
	GetName() (string, error)
	GetUUID() (string, error)
	GetMemoryInfo() (Memory, error)
	GetPersistenceMode() (bool, error)
	SetPersistenceMode(on bool) error
	// GetUncorrectedECCErrors is the count of uncorrected (double-bit)
	// ECC errors since the driver last loaded.
	GetUncorrectedECCErrors() (uint64, error)
	// GetRetiredPages is the number of pages retired for ECC errors
	// (pre-Ampere GPUs), and whether a retirement waits for a reset.
	GetRetiredPages() (count int, pending bool, err error)
	// GetRemappedRows reports row remapping (Ampere and later): rows
	// remapped for correctable and uncorrectable errors, whether a remap
	// waits for a reset, and whether a remap failed.
	GetRemappedRows() (corrected, uncorrected int, pending, failed bool, err error)
}

// Memory is a GPU's framebuffer memory, in bytes.
type Memory struct {
	Total, Free, Used uint64
}

// Errors the NVML implementations wrap.
var (
	// ErrNoDriver: libnvidia-ml.so.1 could not be loaded, or the kernel
	// driver is not loaded. NVML is then unavailable, not broken.
	ErrNoDriver = errors.New("no NVIDIA driver")
	// ErrNotSupported: the GPU or driver does not offer this query.
	ErrNotSupported = errors.New("not supported")
	// ErrNoPermission: the caller may not do this (usually: not root).
	ErrNoPermission = errors.New("not permitted")
)
