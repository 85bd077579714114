//go:build cgo

package gpuwarm

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NewNVML returns the system's NVML, through go-nvml, which loads
// libnvidia-ml.so.1 at Init: if that fails, Init's error wraps ErrNoDriver.
func NewNVML() NVML { return WrapNVML(nvml.New()) }

// WrapNVML adapts a go-nvml Interface, the real library or one of its
// mocks (github.com/NVIDIA/go-nvml/pkg/nvml/mock), to NVML.
func WrapNVML(l nvml.Interface) NVML { return nvmlLib{l} }

type nvmlLib struct{ l nvml.Interface }

type nvmlDevice struct{ d nvml.Device }

// nvmlErr turns a return code into an error: nil for SUCCESS, else one
// naming the call and wrapping the sentinel errors where they apply.
func nvmlErr(call string, r nvml.Return) error {
	switch r {
	case nvml.SUCCESS:
		return nil
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return fmt.Errorf("%w: libnvidia-ml.so.1 not found (%s)", ErrNoDriver, call)
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("%w: the NVIDIA kernel driver is not loaded (%s)", ErrNoDriver, call)
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		return fmt.Errorf("%s: %w", call, ErrNotSupported)
	case nvml.ERROR_NO_PERMISSION:
		return fmt.Errorf("%s: %w", call, ErrNoPermission)
	}
	return fmt.Errorf("%s: %s", call, r.Error())
}

func (n nvmlLib) Init() error     { return nvmlErr("nvmlInit", n.l.Init()) }
func (n nvmlLib) Shutdown() error { return nvmlErr("nvmlShutdown", n.l.Shutdown()) }

func (n nvmlLib) DeviceGetCount() (int, error) {
	c, r := n.l.DeviceGetCount()
	return c, nvmlErr("nvmlDeviceGetCount", r)
}

func (n nvmlLib) DeviceGetHandleByIndex(i int) (Device, error) {
	d, r := n.l.DeviceGetHandleByIndex(i)
	if err := nvmlErr(fmt.Sprintf("nvmlDeviceGetHandleByIndex(%d)", i), r); err != nil {
		return nil, err
	}
	return nvmlDevice{d}, nil
}

func (n nvmlLib) SystemGetDriverVersion() (string, error) {
	v, r := n.l.SystemGetDriverVersion()
	return v, nvmlErr("nvmlSystemGetDriverVersion", r)
}

func (n nvmlLib) SystemGetCudaDriverVersion() (int, error) {
	v, r := n.l.SystemGetCudaDriverVersion()
	return v, nvmlErr("nvmlSystemGetCudaDriverVersion", r)
}

func (d nvmlDevice) GetName() (string, error) {
	v, r := d.d.GetName()
	return v, nvmlErr("nvmlDeviceGetName", r)
}

func (d nvmlDevice) GetUUID() (string, error) {
	v, r := d.d.GetUUID()
	return v, nvmlErr("nvmlDeviceGetUUID", r)
}

func (d nvmlDevice) GetMemoryInfo() (Memory, error) {
	m, r := d.d.GetMemoryInfo()
	return Memory{Total: m.Total, Free: m.Free, Used: m.Used}, nvmlErr("nvmlDeviceGetMemoryInfo", r)
}

func (d nvmlDevice) GetPersistenceMode() (bool, error) {
	m, r := d.d.GetPersistenceMode()
	return m == nvml.FEATURE_ENABLED, nvmlErr("nvmlDeviceGetPersistenceMode", r)
}

func (d nvmlDevice) SetPersistenceMode(on bool) error {
	m := nvml.FEATURE_DISABLED
	if on {
		m = nvml.FEATURE_ENABLED
	}
	return nvmlErr("nvmlDeviceSetPersistenceMode", d.d.SetPersistenceMode(m))
}

func (d nvmlDevice) GetUncorrectedECCErrors() (uint64, error) {
	n, r := d.d.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
	return n, nvmlErr("nvmlDeviceGetTotalEccErrors", r)
}

func (d nvmlDevice) GetRetiredPages() (int, bool, error) {
	var count int
	for _, cause := range []nvml.PageRetirementCause{
		nvml.PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
		nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
	} {
		pages, r := d.d.GetRetiredPages(cause)
		if err := nvmlErr("nvmlDeviceGetRetiredPages", r); err != nil {
			return 0, false, err
		}
		count += len(pages)
	}
	pending, r := d.d.GetRetiredPagesPendingStatus()
	return count, pending == nvml.FEATURE_ENABLED, nvmlErr("nvmlDeviceGetRetiredPagesPendingStatus", r)
}

func (d nvmlDevice) GetRemappedRows() (int, int, bool, bool, error) {
	corr, unc, pending, failed, r := d.d.GetRemappedRows()
	return corr, unc, pending, failed, nvmlErr("nvmlDeviceGetRemappedRows", r)
}
