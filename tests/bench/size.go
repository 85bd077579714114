package main

import (
	"fmt"

	"github.com/modelfs/modelfs/internal/units"
)

// parseSize reads sizes like 2GiB, 512MiB, 1.5GB or 4096, as modelfs's
// own flags do.
func parseSize(s string) (int64, error) {
	n, err := units.ParseSize(s, "size")
	if err == nil && n > 1<<50 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n, err
}
