package main

import (
	"strings"

	"github.com/modelfs/modelfs/internal/units"
)

// parseSize reads sizes like 8MiB, 1.5GB, 4096 or 64k (k/m/g are binary).
// A bad value of a command-line flag (a name starting "--") is a usage
// error; one read from a file is not.
func parseSize(s, flag string) (int64, error) {
	n, err := units.ParseSize(s, flag)
	if err != nil && strings.HasPrefix(flag, "--") {
		return 0, usageError{err}
	}
	return n, err
}

func formatSize(n int64) string { return units.FormatSize(n) }

// sizeOrAuto parses a size flag whose value may be "auto", which is 0.
func sizeOrAuto(s, flag string) (int64, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return 0, nil
	}
	return parseSize(s, flag)
}
