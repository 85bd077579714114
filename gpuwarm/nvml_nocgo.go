//go:build !cgo

package gpuwarm

import "fmt"

// NewNVML returns an NVML whose Init fails: go-nvml needs cgo to load
// libnvidia-ml.so.1, and this binary was built without it.
func NewNVML() NVML { return noNVML{} }

type noNVML struct{}

var errNoCgo = fmt.Errorf("%w: modelfs was built without cgo, which NVML needs (build with CGO_ENABLED=1)", ErrNoDriver)

func (noNVML) Init() error                                { return errNoCgo }
func (noNVML) Shutdown() error                            { return nil }
func (noNVML) DeviceGetCount() (int, error)               { return 0, errNoCgo }
func (noNVML) DeviceGetHandleByIndex(int) (Device, error) { return nil, errNoCgo }
func (noNVML) SystemGetDriverVersion() (string, error)    { return "", errNoCgo }
func (noNVML) SystemGetCudaDriverVersion() (int, error)   { return 0, errNoCgo }
