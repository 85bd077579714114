package mount

import "github.com/modelfs/modelfs/internal/units"

func formatSize(n int64) string { return units.FormatSize(n) }

// percent is part of whole in percent; 100 for an empty whole.
func percent(part, whole int64) float64 {
	if whole == 0 {
		return 100
	}
	return 100 * float64(part) / float64(whole)
}
