package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tally is what the readers did, updated as they go.
type tally struct {
	preads, preadBytes  atomic.Int64
	mmapRuns, mmapBytes atomic.Int64
	wrong               atomic.Int64 // reads (or mmap runs) that returned wrong bytes
	eio                 atomic.Int64 // reads that failed with EIO, mmap runs that took a SIGBUS
	otherErrs           atomic.Int64

	mu       sync.Mutex
	problems []string // the first few failures, for the report
}

const maxProblems = 20

func (t *tally) problem(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.problems) < maxProblems {
		t.problems = append(t.problems, fmt.Sprintf(format, args...))
	}
}

func (t *tally) verified() int64 { return t.preadBytes.Load() + t.mmapBytes.Load() }

// Loop bounds besides the deadline, so that no reader spins forever on a
// clock that misbehaves.
const (
	maxPreadsPerReader = 100_000_000
	maxMmapRunsPerRead = 1_000_000
	mmapRunTimeout     = 10 * time.Minute
	reopenEvery        = 64 // preads per open file handle: opens are part of the load
)

// pickFile chooses a file: mostly weighted by size, as a loader's reads
// are, and sometimes uniformly, so the small config and tokenizer files
// (read whole on open, passed through once complete on disk) get read too.
func pickFile(rng *rand.Rand, files []*soakFile, totalBytes int64) *soakFile {
	if rng.IntN(20) == 0 {
		return files[rng.IntN(len(files))]
	}
	x := rng.Int64N(totalBytes)
	for _, f := range files {
		if x < f.size {
			return f
		}
		x -= f.size
	}
	return files[len(files)-1]
}

// readSize is log-uniform from 1 byte to maxRead: many small reads, some
// large ones, as loaders mix header and tensor reads.
func readSize(rng *rand.Rand, maxRead int64) int64 {
	return max(1, int64(math.Exp(rng.Float64()*math.Log(float64(maxRead)))))
}

// preadReader does random preads through the mounts until the deadline and
// checks each against the original.
func preadReader(ctx context.Context, deadline time.Time, rng *rand.Rand, files []*soakFile, totalBytes, maxRead int64, t *tally) {
	got := make([]byte, maxRead)
	want := make([]byte, maxRead)
	open := map[*soakFile]*os.File{}
	uses := map[*soakFile]int{}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	for i := 0; i < maxPreadsPerReader && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		sf := pickFile(rng, files, totalBytes)
		f := open[sf]
		if f == nil || uses[sf] >= reopenEvery {
			if f != nil {
				f.Close()
			}
			var err error
			if f, err = os.Open(sf.mounted); err != nil {
				delete(open, sf)
				countErr(t, err, "open %s: %v", sf.mounted, err)
				continue
			}
			open[sf], uses[sf] = f, 0
		}
		uses[sf]++
		off := rng.Int64N(sf.size)
		n := min(readSize(rng, maxRead), sf.size-off)
		if _, err := f.ReadAt(got[:n], off); err != nil {
			countErr(t, err, "pread %s [%d, %d): %v", sf.mounted, off, off+n, err)
			continue
		}
		if _, err := sf.orig.ReadAt(want[:n], off); err != nil {
			t.otherErrs.Add(1)
			t.problem("reading the original %s: %v", sf.orig.Name(), err)
			continue
		}
		if !bytes.Equal(got[:n], want[:n]) {
			t.wrong.Add(1)
			t.problem("WRONG BYTES: %s [%d, %d), first difference at %d", sf.mounted, off, off+n, off+int64(firstDiff(got[:n], want[:n])))
			continue
		}
		t.preads.Add(1)
		t.preadBytes.Add(n)
		// Drop the file's pages, or after a pass the kernel's page cache
		// would serve the reads and modelfs would see none of them. Pages
		// mapped by an mmap reader stay.
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
}

// dropPages drops the page cache of a file (except pages mapped somewhere).
func dropPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

func countErr(t *tally, err error, format string, args ...any) {
	if errors.Is(err, syscall.EIO) {
		t.eio.Add(1)
	} else {
		t.otherErrs.Add(1)
	}
	t.problem(format, args...)
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// mmapReader runs mmapread on whole models until the deadline: each run
// maps every shard in a child process, touches every page in header or
// random order and prints the sha256 of each, checked against the
// original's.
func mmapReader(ctx context.Context, deadline time.Time, rng *rand.Rand, bin string, models []*soakModel, t *tally) {
	for i := 0; i < maxMmapRunsPerRead && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		m := models[rng.IntN(len(models))]
		order := []string{"header", "random"}[rng.IntN(2)]
		// Start cold, or every run after the first would be served from
		// the page cache.
		for _, f := range m.files {
			if err := dropPages(f.mounted); err != nil {
				countErr(t, err, "dropping the page cache of %s: %v", f.mounted, err)
			}
		}
		runCtx, cancel := context.WithTimeout(ctx, mmapRunTimeout)
		cmd := exec.CommandContext(runCtx, bin, "-quiet", "-order", order, m.mountDir)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		timedOut := runCtx.Err() != nil
		cancel()
		msg := strings.TrimSpace(stderr.String())
		switch {
		case ctx.Err() != nil:
			return // interrupted: not the mount's doing
		case timedOut:
			t.otherErrs.Add(1)
			t.problem("mmapread -order %s %s: no result after %v", order, m.mountDir, mmapRunTimeout)
		case err != nil && strings.Contains(msg, "fault reading mapping"):
			// A page the kernel could not fill: the mmap face of EIO.
			t.eio.Add(1)
			t.problem("mmapread -order %s %s: %s", order, m.mountDir, msg)
		case err != nil:
			t.otherErrs.Add(1)
			t.problem("mmapread -order %s %s: %v: %s", order, m.mountDir, err, msg)
		case stdout.String() != m.shardSums:
			t.wrong.Add(1)
			t.problem("WRONG BYTES: mmapread -order %s %s printed\n%swant\n%s", order, m.mountDir, stdout.String(), m.shardSums)
		default:
			t.mmapRuns.Add(1)
			t.mmapBytes.Add(m.shardBytes)
		}
	}
}

// shardSums is sha256sum's output for the model's safetensors files, which
// is what mmapread -quiet prints for a correct mount.
func shardSums(files []*soakFile) (sums string, n int64, err error) {
	var b strings.Builder
	for _, f := range files { // sorted by name, as mmapread goes
		if filepath.Ext(f.name) != ".safetensors" {
			continue
		}
		fmt.Fprintf(&b, "%s  %s\n", f.sha256, f.name)
		n += f.size
	}
	if n == 0 {
		return "", 0, errors.New("the model has no safetensors files")
	}
	return b.String(), n, nil
}
