package gpuwarm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/modelfs/modelfs/internal/units"
)

// ErrDoesNotFit is wrapped by the fit check's error when a GPU lacks the
// memory for its share of the tensors.
var ErrDoesNotFit = errors.New("model does not fit")

// Fit is the outcome of the fit check.
type Fit struct {
	TensorBytes    int64    `json:"tensor_bytes"`
	TensorParallel int      `json:"tensor_parallel"`
	PerGPUBytes    int64    `json:"per_gpu_bytes"`
	MemFraction    float64  `json:"gpu_mem_fraction"`
	GPUs           []FitGPU `json:"gpus"`
	Fits           bool     `json:"fits"`
}

// FitGPU is one GPU the model would use.
type FitGPU struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid"`
	FreeBytes   uint64 `json:"free_bytes"`
	UsableBytes int64  `json:"usable_bytes"`
	Fits        bool   `json:"fits"`
}

// checkFit checks that tensorBytes split over the first tp GPUs fits in
// fraction of each one's free memory. It returns the Fit in every case
// it could compute one, and an error wrapping ErrDoesNotFit, naming the
// numbers, when some GPU falls short.
func checkFit(inv *Inventory, tensorBytes int64, tp int, fraction float64) (*Fit, error) {
	if tp < 1 {
		return nil, fmt.Errorf("tensor-parallel %d: want at least 1", tp)
	}
	if fraction <= 0 || fraction > 1 {
		return nil, fmt.Errorf("GPU memory fraction %g: want more than 0 and at most 1", fraction)
	}
	if tp > len(inv.GPUs) {
		return nil, fmt.Errorf("%w: tensor-parallel %d needs %d GPUs, %d found", ErrDoesNotFit, tp, tp, len(inv.GPUs))
	}
	per := (tensorBytes + int64(tp) - 1) / int64(tp)
	f := &Fit{TensorBytes: tensorBytes, TensorParallel: tp, PerGPUBytes: per, MemFraction: fraction, Fits: true}
	var short []string
	for _, g := range inv.GPUs[:tp] {
		usable := int64(float64(g.MemoryFree) * fraction)
		fg := FitGPU{Index: g.Index, UUID: g.UUID, FreeBytes: g.MemoryFree, UsableBytes: usable, Fits: per <= usable}
		f.GPUs = append(f.GPUs, fg)
		if !fg.Fits {
			f.Fits = false
			short = append(short, fmt.Sprintf("GPU %d (%s, %s) has %s free x %g = %s usable (%d bytes)",
				g.Index, g.Name, g.UUID, formatBytes(int64(g.MemoryFree)), fraction, formatBytes(usable), usable))
		}
	}
	if !f.Fits {
		return f, fmt.Errorf("%w: %s of tensors (%d bytes) / tensor-parallel %d = %s (%d bytes) per GPU, but %s",
			ErrDoesNotFit, formatBytes(tensorBytes), tensorBytes, tp, formatBytes(per), per, strings.Join(short, "; "))
	}
	return f, nil
}

// formatBytes is n in binary units, like "1.5 GiB".
func formatBytes(n int64) string { return units.FormatSize(n) }
