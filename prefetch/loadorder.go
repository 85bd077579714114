package prefetch

import (
	"io"

	"github.com/modelfs/modelfs/modelformat/loadorder"
)

// The order a loader reads a model in, from its headers (Plan) or from a
// recorded profile, is modelformat/loadorder's: it is knowledge of the
// formats, which gpuwarm shares without depending on the prefetcher.
// These names keep the prefetcher's callers in its terms.
type (
	File         = loadorder.File
	Range        = loadorder.Range
	PlanOptions  = loadorder.PlanOptions
	HeaderBudget = loadorder.HeaderBudget
	Entry        = loadorder.Entry
)

// DefaultMaxHeader is loadorder.DefaultMaxHeader.
const DefaultMaxHeader = loadorder.DefaultMaxHeader

// NewHeaderBudget is loadorder.NewHeaderBudget.
func NewHeaderBudget(max int64) *HeaderBudget { return loadorder.NewHeaderBudget(max) }

// Plan is loadorder.Plan.
func Plan(files []File, opts PlanOptions) ([]Range, error) { return loadorder.Plan(files, opts) }

// ReadProfile is loadorder.ReadProfile.
func ReadProfile(r io.Reader) ([]Entry, error) { return loadorder.ReadProfile(r) }

// WriteProfile is loadorder.WriteProfile.
func WriteProfile(w io.Writer, entries []Entry) error { return loadorder.WriteProfile(w, entries) }

// Filter is loadorder.Filter.
func Filter(entries []Entry, current map[string]string) []Entry {
	return loadorder.Filter(entries, current)
}
