package gpuwarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/internal/cgroups"
	"github.com/modelfs/modelfs/modelformat/loadorder"
)

// PinAll as Options.PinBytes pins the whole plan.
const PinAll int64 = -1

// PinReport says what was pinned.
type PinReport struct {
	// From is where the order came from: "profile FILE" or "layer order".
	From string `json:"from"`
	// BudgetBytes is Options.PinBytes (-1: all).
	BudgetBytes int64 `json:"budget_bytes"`
	// PlannedBytes is the whole plan, page-aligned and without overlaps.
	PlannedBytes int64   `json:"planned_bytes"`
	Bytes        int64   `json:"bytes"`
	Files        int     `json:"files"`
	Ranges       int     `json:"ranges"`
	Millis       float64 `json:"ms"`
	BytesPerSec  int64   `json:"bytes_per_s"`
	// Memlock says how RLIMIT_MEMLOCK allowed it.
	Memlock string `json:"memlock"`
}

// pinner maps and locks the hot ranges of a model. Its functions are
// fields so that tests can watch or hold them.
type pinner struct {
	pageSize int64
	workers  int   // mlock calls at once
	chunk    int64 // bytes per mlock call
	memlock  memlockEnv
	mlock    func([]byte) error
}

func newPinner() *pinner {
	return &pinner{
		pageSize: int64(os.Getpagesize()),
		workers:  4,
		chunk:    64 << 20,
		memlock:  systemMemlock(),
		mlock:    unix.Mlock,
	}
}

// piece is a page-aligned range of one file; end may pass the file's end
// by less than a page.
type piece struct {
	path     string
	off, end int64
}

// pinPieces turns plan into page-aligned pieces in plan order, each page
// once, and cuts them to budget (PinAll: no cut). planned is the size of
// the whole plan so aligned. Ranges of files not in sizes are skipped.
func pinPieces(plan []loadorder.Range, sizes map[string]int64, pageSize, budget int64) (pieces []piece, planned int64) {
	claimed := map[string]*intervals{}
	left := budget
	for _, r := range plan {
		size, ok := sizes[r.Path]
		if !ok || r.Len <= 0 || r.Off >= size {
			continue
		}
		s := r.Off &^ (pageSize - 1)
		e := min(alignUp(r.Off+r.Len, pageSize), alignUp(size, pageSize))
		iv := claimed[r.Path]
		if iv == nil {
			iv = &intervals{}
			claimed[r.Path] = iv
		}
		for _, p := range iv.claim(s, e) {
			planned += p[1] - p[0]
			if budget != PinAll {
				n := min(p[1]-p[0], left&^(pageSize-1))
				if n <= 0 {
					continue
				}
				p[1] = p[0] + n
				left -= n
			}
			pieces = append(pieces, piece{r.Path, p[0], p[1]})
		}
	}
	return pieces, planned
}

func alignUp(n, a int64) int64 { return (n + a - 1) &^ (a - 1) }

// intervals is a sorted set of disjoint, non-adjacent [start, end) ranges.
type intervals struct{ iv [][2]int64 }

// claim adds [s, e) and returns the parts of it that were not there yet.
func (x *intervals) claim(s, e int64) [][2]int64 {
	if s >= e {
		return nil
	}
	// The first interval that ends at or after s could overlap or touch.
	i, _ := slices.BinarySearchFunc(x.iv, s, func(v [2]int64, t int64) int {
		if v[1] < t {
			return -1
		}
		return 1
	})
	var out [][2]int64
	pos, j := s, i
	for ; j < len(x.iv) && x.iv[j][0] <= e; j++ {
		if x.iv[j][0] > pos {
			out = append(out, [2]int64{pos, x.iv[j][0]})
		}
		pos = max(pos, x.iv[j][1])
	}
	if pos < e {
		out = append(out, [2]int64{pos, e})
	}
	merged := [2]int64{s, e}
	if j > i {
		merged = [2]int64{min(s, x.iv[i][0]), max(e, x.iv[j-1][1])}
	}
	x.iv = slices.Replace(x.iv, i, j, merged)
	return out
}

// pinSet is the files mapped for pinning; unmapping them unlocks them.
type pinSet struct {
	mu    sync.Mutex
	files []pinnedFile
}

type pinnedFile struct {
	path string
	data []byte
}

// release unmaps every file, which unlocks their pages. It may be called
// more than once.
func (s *pinSet) release() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, f := range s.files {
		if err := unix.Munmap(f.data); err != nil {
			errs = append(errs, fmt.Errorf("unmapping %s: %w", f.path, err))
		}
	}
	s.files = nil
	return errors.Join(errs...)
}

// mapping returns the mapping of the file at path (relative to dir),
// mapping it on first use.
func (s *pinSet) mapping(dir, path string, size int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		if f.path == path {
			return f.data, nil
		}
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(path)))
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	s.files = append(s.files, pinnedFile{path, data})
	return data, nil
}

// pin locks the first budget bytes of plan (files and sizes relative to
// dir) into memory, a chunk per mlock call, p.workers at a time in plan
// order. progress, when not nil, is added the bytes as they are locked.
// On error nothing stays pinned.
func (p *pinner) pin(ctx context.Context, dir string, plan []loadorder.Range, sizes map[string]int64, budget int64, progress *atomic.Int64, log *slog.Logger) (*pinSet, *PinReport, error) {
	pieces, planned := pinPieces(plan, sizes, p.pageSize, budget)
	rep := &PinReport{BudgetBytes: budget, PlannedBytes: planned, Ranges: len(pieces)}
	var need int64
	files := map[string]bool{}
	for _, pc := range pieces {
		need += pc.end - pc.off
		files[pc.path] = true
	}
	rep.Files = len(files)
	if room, where, ok := cgroups.Headroom(); ok && need > room {
		// mlock would fail, or squeeze everything else out of memory.
		log.Warn("pinning more than the memory available", "pin", formatBytes(need), "available", formatBytes(room), "per", where)
	}
	var err error
	if rep.Memlock, err = ensureMemlock(need, p.memlock); err != nil {
		return nil, rep, err
	}

	set := &pinSet{}
	t0 := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan []byte)
	var wg sync.WaitGroup
	for range max(p.workers, 1) {
		wg.Go(func() {
			for b := range work {
				// Start reading the whole chunk at once, in large requests,
				// rather than a fault at a time; then wait for it and lock
				// it. Both are system calls: the runtime carries on.
				_ = unix.Madvise(b, unix.MADV_WILLNEED)
				if err := p.mlock(b); err != nil {
					cancel(fmt.Errorf("mlock: %w", mlockHint(err)))
					continue
				}
				if progress != nil {
					progress.Add(alignUp(int64(len(b)), p.pageSize))
				}
			}
		})
	}
feed:
	for _, pc := range pieces {
		size := sizes[pc.path]
		data, err := set.mapping(dir, pc.path, size)
		if err != nil {
			cancel(err)
			break
		}
		for off := pc.off; off < pc.end && off < size; off += p.chunk {
			// The mapping's slice ends at the file's end; mlock rounds the
			// last partial page up.
			b := data[off:min(off+p.chunk, pc.end, size)]
			select {
			case work <- b:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, rep, errors.Join(fmt.Errorf("pinning: %w", err), set.release())
	}
	d := time.Since(t0)
	rep.Bytes = need
	rep.Millis = float64(d.Microseconds()) / 1000
	rep.BytesPerSec = int64(float64(need) / max(d.Seconds(), 1e-6))
	return set, rep, nil
}

// mlockHint explains the errors mlock gives when memory is short.
func mlockHint(err error) error {
	switch {
	case errors.Is(err, unix.ENOMEM):
		return fmt.Errorf("%w (over RLIMIT_MEMLOCK, or out of memory)", err)
	case errors.Is(err, unix.EAGAIN):
		return fmt.Errorf("%w (not enough memory could be locked)", err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w (RLIMIT_MEMLOCK is 0 and CAP_IPC_LOCK is missing)", err)
	}
	return err
}
