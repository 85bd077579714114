package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// pageReportingDir is where a guest kernel with free page reporting
// (virtio-balloon and the like) exposes its settings.
const pageReportingDir = "/sys/module/page_reporting/parameters"

// pageReporting is how a guest kernel hands freed memory back to its
// host. Memory handed back is no longer backed: the next first touch of
// it traps to the host, and that time is charged to whatever guest code
// touched it. A cold pass touches fresh memory for every byte it brings
// in (the reader's page cache, which the mount's FUSE replies write, and
// the mount's buffers), so on such a guest the same pass costs the mount
// two to three times more CPU when it runs on memory that was handed
// back than on memory freed a moment before.
type pageReporting struct {
	Order int `json:"order"` // free blocks of 2^Order pages are reported
	// Delay is how long memory stays free before it is reported.
	Delay time.Duration `json:"delay_ns"`
}

// readPageReporting returns the guest's page reporting settings under
// dir, or nil where the kernel reports no free pages.
func readPageReporting(dir string) (*pageReporting, error) {
	order, err := readSysInt(filepath.Join(dir, "page_reporting_order"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p := &pageReporting{Order: order}
	// Kernels without the delay report as soon as a pass runs.
	if ms, err := readSysInt(filepath.Join(dir, "min_free_ms")); err == nil {
		p.Delay = time.Duration(ms) * time.Millisecond
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return p, nil
}

func (p *pageReporting) String() string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("blocks of %d KiB, %v after they are freed", 4<<p.Order, p.Delay)
}

// holdFreedPages makes the guest keep freed memory at least d before it
// reports it to the host, and returns what puts the old delay back. Where
// the kernel reports nothing it does nothing.
func holdFreedPages(dir string, d time.Duration) (restore func() error, err error) {
	path := filepath.Join(dir, "min_free_ms")
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return func() error { return nil }, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte(strconv.FormatInt(d.Milliseconds(), 10)), 0o644); err != nil {
		return nil, fmt.Errorf("--hold-freed-pages %v: %w", d, err)
	}
	return func() error {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			return fmt.Errorf("restoring %s to %s: %w", path, strings.TrimSpace(string(old)), err)
		}
		return nil
	}, nil
}

func readSysInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
