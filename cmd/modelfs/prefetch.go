package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/prefetch"
)

// prefetcher is one mount's prefetch machinery, as --prefetch chose it:
// readahead per open file, a plan (from the model's headers or a recorded
// profile) followed ahead of the reader, whole small files on first open,
// and the profile recorder.
type prefetcher struct {
	mode        string // auto, layer, profile, readahead or off
	profile     string // --profile to replay
	ra          prefetch.ReadaheadOptions
	smallFile   int64
	window      int64
	blockSize   int64
	recorder    *prefetch.Recorder // nil unless --record-profile
	follower    atomic.Pointer[prefetch.Follower]
	log         *slog.Logger
	objs        map[string]*blockcache.Object
	cache       *blockcache.Cache
	fetchObjs   map[string]fetch.Object
	plannedFrom string
}

func (p *prefetcher) planned() bool {
	return p.mode == "auto" || p.mode == "layer" || p.mode == "profile"
}

// opener returns the Content of one file.
func (p *prefetcher) opener(o fetch.Object) fs.Opener {
	return &streamOpener{p: p, obj: p.objs[o.Key], path: o.Key, version: o.Version(), small: o.Size <= p.smallFile}
}

// streamOpener gives each open file its own readahead stream, and the
// verified disk-cache file for passthrough when the object is all there.
type streamOpener struct {
	p       *prefetcher
	obj     *blockcache.Object
	path    string
	version string
	small   bool
	opened  atomic.Bool
}

func (o *streamOpener) Open() fs.Handle {
	if o.small && o.p.mode != "off" && !o.opened.Swap(true) {
		// Config and tokenizer files are read whole: fetch them in one go.
		o.obj.Prefetch(0, o.obj.Size())
	}
	watchers := []prefetch.Watcher{planWatcher{o.p, o.path}}
	if o.p.recorder != nil {
		watchers = append(watchers, recordWatcher{o.p.recorder, o.path, o.version})
	}
	s := prefetch.NewStream(o.obj, o.p.ra, watchers...)
	if b, ok := o.obj.Backing(); ok {
		return &backedStream{Stream: s, backing: b}
	}
	return s
}

// planWatcher shows reads to the plan follower, once there is one.
type planWatcher struct {
	p    *prefetcher
	path string
}

func (w planWatcher) Observe(off, n int64) {
	if f := w.p.follower.Load(); f != nil {
		if fw := f.ForFile(w.path); fw != nil {
			fw.Observe(off, n)
		}
	}
}

type recordWatcher struct {
	r             *prefetch.Recorder
	path, version string
}

func (w recordWatcher) Observe(off, n int64) { w.r.Record(w.path, w.version, off, n) }

// start computes the plan and starts following it. It runs after the
// mount is ready, so reading headers never delays the mount.
func (p *prefetcher) start(ctx context.Context) {
	if !p.planned() {
		return
	}
	t0 := time.Now()
	// Files complete in the disk cache are read through passthrough or
	// from disk at local speed: prefetching them into RAM only costs.
	files := make(map[string]prefetch.FileBlocks, len(p.objs))
	for k, o := range p.objs {
		if !o.CompleteOnDisk() {
			files[k] = o
		}
	}
	if len(files) == 0 {
		return
	}
	var plan []prefetch.Range
	if p.profile != "" {
		plan = p.profilePlan()
	}
	if plan == nil && p.mode != "profile" {
		plan = p.layerPlan(ctx, files)
	}
	if len(plan) == 0 {
		return
	}
	f := prefetch.NewFollower(plan, files, prefetch.FollowOptions{Window: p.window, BlockSize: p.blockSize})
	p.follower.Store(f)
	// Demand loads so far (headers read for the plan, reads that came
	// first) tell apart what prefetch could not have covered.
	p.log.Info("prefetch plan", "from", p.plannedFrom, "ranges", len(plan), "bytes", f.PlannedBytes(),
		"took", time.Since(t0).Round(time.Millisecond), "demand_loads_before", p.cache.Stats().DemandLoads)
}

// layerPlan plans the files in want (nil: all of them) from their headers.
func (p *prefetcher) layerPlan(ctx context.Context, want map[string]prefetch.FileBlocks) []prefetch.Range {
	files := make([]prefetch.File, 0, len(p.objs))
	for k, o := range p.objs {
		if _, ok := want[k]; want != nil && !ok {
			continue
		}
		files = append(files, prefetch.File{Path: k, Size: o.Size(), Open: func() (io.ReaderAt, error) {
			return objectReader{ctx, o}, nil
		}})
	}
	plan, err := prefetch.Plan(files, prefetch.PlanOptions{SmallFile: p.smallFile})
	if err != nil {
		p.log.Warn("prefetch plan is partial", "err", err)
	}
	p.plannedFrom = "headers (layer order)"
	return plan
}

func (p *prefetcher) profilePlan() []prefetch.Range {
	f, err := os.Open(p.profile)
	if err != nil {
		p.log.Warn("no profile to replay", "err", err)
		return nil
	}
	defer f.Close()
	entries, err := prefetch.ReadProfile(bufio.NewReader(f))
	if err != nil {
		p.log.Warn("profile not used", "file", p.profile, "err", err)
		return nil
	}
	current := make(map[string]string, len(p.fetchObjs))
	for k, o := range p.fetchObjs {
		current[k] = o.Version()
	}
	kept := prefetch.Filter(entries, current)
	if len(kept) < len(entries) {
		p.log.Info("profile entries for changed or missing files ignored", "ignored", len(entries)-len(kept))
	}
	plan := make([]prefetch.Range, len(kept))
	for i, e := range kept {
		plan[i] = prefetch.Range{Path: e.Path, Off: e.Off, Len: e.Len}
	}
	p.plannedFrom = "profile " + p.profile
	if len(plan) == 0 {
		return nil
	}
	return plan
}

// saveProfile writes the recorded first-read order, atomically.
func (p *prefetcher) saveProfile(path string) error {
	if p.recorder == nil {
		return nil
	}
	if p.recorder.Truncated() {
		p.log.Warn("profile recording stopped at its entry limit")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".profile-*")
	if err != nil {
		return fmt.Errorf("writing profile: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	err = prefetch.WriteProfile(w, p.recorder.Entries())
	if err == nil {
		err = w.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing profile %s: %w", path, err)
	}
	p.log.Info("profile written", "file", path, "entries", len(p.recorder.Entries()))
	return nil
}

// objectReader reads a cached object for the planner.
type objectReader struct {
	ctx context.Context
	o   *blockcache.Object
}

func (r objectReader) ReadAt(p []byte, off int64) (int, error) { return r.o.ReadAt(r.ctx, p, off) }

// backedStream is a stream whose object is complete in the disk cache.
type backedStream struct {
	*prefetch.Stream
	backing *blockcache.Backing
}

func (b *backedStream) PassthroughFd() (int, bool) { return int(b.backing.File.Fd()), true }

func (b *backedStream) Release() {
	b.Stream.Release()
	b.backing.Close()
}
