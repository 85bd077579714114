package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfs/modelfs/tests/mountproc"
)

// buildBinaries builds modelfs and mmapread from this tree: the soak runs
// them as separate processes.
func buildBinaries(t *testing.T) (modelfs, mmapread string) {
	t.Helper()
	dir := t.TempDir()
	modelfs, mmapread = filepath.Join(dir, "modelfs"), filepath.Join(dir, "mmapread")
	for bin, pkg := range map[string]string{modelfs: "cmd/modelfs", mmapread: "tests/cmd/mmapread"} {
		out, err := exec.Command("go", "build", "-o", bin, "github.com/modelfs/modelfs/"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
	return modelfs, mmapread
}

// A short soak: the same run as make soak, with small models and caches
// and half a minute of reading.
func TestShortSoak(t *testing.T) {
	mountproc.SkipWithoutFuse(t)
	cfg := DefaultConfig()
	cfg.Modelfs, cfg.Mmapread = buildBinaries(t)
	cfg.Dir = t.TempDir()
	cfg.Duration = 20 * time.Second
	cfg.Sizes = []int64{8 << 20, 16 << 20, 32 << 20}
	cfg.Readers, cfg.MmapReaders = 8, 2
	// Small blocks and caches: many GETs, so many faults and evictions.
	cfg.BlockSize, cfg.MemCache = 256<<10, 4<<20
	cfg.MaxRead = 1 << 20
	cfg.Progress = 10 * time.Second
	cfg.Log = testWriter{t}

	rep, err := Run(context.Background(), cfg)
	if rep != nil {
		var b strings.Builder
		rep.Print(&b)
		t.Log(b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Failures {
		t.Errorf("soak: %s", f)
	}
	// judge already fails the run on each of these; the test states them.
	if rep.WrongReads != 0 || rep.EIO != 0 || rep.ReadFailures != 0 || rep.OtherErrors != 0 {
		t.Errorf("%d wrong reads, %d EIO seen, %d EIO logged, %d other errors; want none",
			rep.WrongReads, rep.EIO, rep.ReadFailures, rep.OtherErrors)
	}
	if rep.Preads == 0 || rep.MmapRuns == 0 {
		t.Errorf("%d preads and %d mmap runs, want some of each", rep.Preads, rep.MmapRuns)
	}
	for _, k := range faultNames() {
		if rep.Faults[k] == 0 {
			t.Errorf("no %s fault injected (faults: %v)", k, rep.Faults)
		}
	}
	if rep.Total.Retries == 0 || rep.Total.Retries < rep.FailingFaults {
		t.Errorf("%d retries for %d tries failed by faults", rep.Total.Retries, rep.FailingFaults)
	}
	if rep.Total.RAMEvictions == 0 || rep.Total.DiskEvictions == 0 {
		t.Errorf("evictions: RAM %d, disk %d; want both > 0", rep.Total.RAMEvictions, rep.Total.DiskEvictions)
	}
	for name, hwm := range rep.PeakRSS {
		if hwm == 0 || hwm > rep.Budget {
			t.Errorf("mount of %s: peak RSS %d bytes, budget %d", name, hwm, rep.Budget)
		}
	}
}

// testWriter sends the soak's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-duration", "8m", "-sizes", "64MiB,1.5GiB", "-cache-size", "100MiB", "-mount-flags", "--pprof --prefetch readahead"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.Duration != 8*time.Minute || len(c.Sizes) != 2 || c.Sizes[1] != 3<<29 || c.DiskCache != 100<<20 || len(c.MountFlags) != 3 {
		t.Errorf("parsed %+v", c)
	}
	if c, err := parseFlags(nil, os.Stderr); err != nil || c.DiskCache != 0 || len(c.Sizes) != 3 {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	var discard strings.Builder
	for _, args := range [][]string{
		{"-sizes", "lots"}, {"-readers", "2", "-mmap-readers", "3"}, {"-fault-rate", "0.9"},
		{"-block-size", "1MiB", "-mem-cache", "1MiB"}, {"-nope"}, {"extra"},
	} {
		if _, err := parseFlags(args, &discard); err == nil {
			t.Errorf("%q: accepted", args)
		}
	}
}
