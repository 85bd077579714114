package mount

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/internal/cgroups"
	"github.com/modelfs/modelfs/modelformat/loadorder"
	"github.com/modelfs/modelfs/prefetch"
)

// prefetcher is one mount's prefetch machinery, as --prefetch chose it:
// readahead per open file, a plan per model (from its headers or a
// recorded profile) followed ahead of the reader, whole small files at
// mount (with a plan) and on first open, and the profile recorder.
type prefetcher struct {
	mode      string // auto, layer, profile, readahead or off
	profile   string // --profile to replay
	ra        prefetch.ReadaheadOptions
	smallFile int64
	window    int64
	blockSize int64
	recorder  *prefetch.Recorder // nil unless --record-profile
	log       *slog.Logger
	cache     *blockcache.Cache
	objs      map[string]*blockcache.Object // by path in the mount
	files     map[string]remoteFile         // by path in the mount
	// directHeaders has the plan read big files' headers from the source
	// in small ranges rather than through the cache's blocks (see
	// layerPlan); warm fills the blocks anyway and leaves it off.
	directHeaders bool
	versions      map[string]string // by path, for profile replay
	groups        []*planGroup
	groupOf       map[string]*planGroup // by path
	// headers bounds the header bytes all models' plans parse at once, so
	// the memory of parsing stays bounded however many models a manifest
	// lists; set by start.
	headers *loadorder.HeaderBudget
	// heads are big files' first chunks, for the plans and for readers'
	// first reads (headers.go).
	heads headChunks
	// primes holds a place for each cache file being filled (prime),
	// primed has the paths whose fill was started (or found done), each
	// with a channel closed when it ends, and opened the paths opened in
	// this mount.
	primes         chan struct{}
	primed, opened sync.Map
}

// planGroup is one model's plan. Each model is followed apart, so that a
// reader of one model never moves another's window.
type planGroup struct {
	model string // the manifest's name; "" for a single SOURCE
	paths []string
	// follower is set once the plan is made; blocks, the blocks the plan
	// covers by path, is written before it and read-only after.
	follower atomic.Pointer[prefetch.Follower]
	blocks   map[string][]int64
}

func (p *prefetcher) planned() bool {
	return p.mode == "auto" || p.mode == "layer" || p.mode == "profile"
}

// attach sets the prefetcher up for r's files, one plan group per model.
func (p *prefetcher) attach(r *remote) {
	p.cache = r.cache
	p.objs = make(map[string]*blockcache.Object, len(r.files))
	p.files = make(map[string]remoteFile, len(r.files))
	p.versions = make(map[string]string, len(r.files))
	p.groupOf = make(map[string]*planGroup, len(r.files))
	byModel := map[*modelSource]*planGroup{}
	for _, f := range r.files {
		g := byModel[f.model]
		if g == nil {
			g = &planGroup{model: f.model.spec.Name}
			byModel[f.model] = g
			p.groups = append(p.groups, g)
		}
		g.paths = append(g.paths, f.path)
		p.groupOf[f.path] = g
		p.objs[f.path] = r.cache.Object(f.cacheID())
		p.files[f.path] = f
		p.versions[f.path] = f.obj.Version()
	}
}

// opener returns the Content of one file.
func (p *prefetcher) opener(f remoteFile) fs.Opener {
	return &streamOpener{p: p, obj: p.objs[f.path], path: f.path, version: f.obj.Version(), small: f.obj.Size <= p.smallFile}
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

// Damaged reports whether the file failed its store's checksum.
func (o *streamOpener) Damaged() bool {
	st, _ := o.obj.Verification()
	return st == blockcache.VerifyFailed
}

func (o *streamOpener) Open() fs.Handle {
	// Stored before the follower is looked at, and the follower set before
	// the opens are (startGroup): each open is told to it at least once.
	o.p.opened.Store(o.path, true)
	if g := o.p.groupOf[o.path]; g != nil {
		if f := g.follower.Load(); f != nil {
			f.Opened(o.path)
		}
	}
	watchers := []prefetch.Watcher{planWatcher{o.p.groupOf[o.path], o.path, &o.p.heads}}
	if o.p.recorder != nil {
		watchers = append(watchers, recordWatcher{o.p.recorder, o.path, o.version})
	}
	s := prefetch.NewStream(o.obj, o.p.ra, watchers...)
	if b, ok := o.obj.Backing(); ok {
		if o.p.mode != "off" {
			awaitFill(o.p.prime(o.path, b.File))
		}
		return &backedStream{Stream: s, backing: b, obj: o.obj}
	}
	if o.small && o.p.mode != "off" && !o.opened.Swap(true) {
		// Config and tokenizer files are read whole: fetch them in one go
		// (not when passed through: the kernel reads the cache file).
		o.obj.Prefetch(0, o.obj.Size())
	}
	return &headStream{Stream: s, p: o.p, path: o.path, obj: o.obj}
}

// planWatcher shows reads to the model's plan follower, once there is
// one, and tells the stream where the file's tensors end.
type planWatcher struct {
	g     *planGroup
	path  string
	heads *headChunks
}

func (w planWatcher) Observe(off, n int64) {
	if f := w.g.follower.Load(); f != nil {
		if fw := f.ForFile(w.path); fw != nil {
			fw.Observe(off, n)
		}
	}
}

// Bound is the end of the tensor a read ending at end stops in, from the
// file's header chunk, which a loader's first read brings, or else from
// the plan, once there is one: see prefetch.Bounder. A load of the whole
// model reads every tensor: none bounds it.
func (w planWatcher) Bound(end int64) (int64, bool) {
	f := w.g.follower.Load()
	if f != nil && f.Whole() {
		return 0, false
	}
	if at, ok := w.heads.bound(w.path, end); ok {
		return at, true
	}
	if f != nil {
		return f.Bound(w.path, end)
	}
	return 0, false
}

type recordWatcher struct {
	r             *prefetch.Recorder
	path, version string
}

func (w recordWatcher) Observe(off, n int64) { w.r.Record(w.path, w.version, off, n) }

// start computes each model's plan and starts following it. It runs after
// the mount is ready, so reading headers never delays the mount; models
// are planned at once, each plan reading its own headers.
func (p *prefetcher) start(ctx context.Context) {
	if !p.planned() {
		return
	}
	// Small files take a block's place in RAM each until read: all
	// models' together at most an eighth of the budget's blocks.
	room := int(p.cache.Stats().MemCapacity / p.blockSize / 8)
	for _, g := range p.groups {
		room -= p.fetchSmallFiles(g, room)
	}
	var profile []loadorder.Range
	if p.profile != "" {
		profile = p.profilePlan()
	}
	p.headers = loadorder.NewHeaderBudget(loadorder.DefaultMaxHeader)
	var wg sync.WaitGroup
	for _, g := range p.groups {
		wg.Go(func() { p.startGroup(ctx, g, profile) })
	}
	wg.Wait()
}

func (p *prefetcher) startGroup(ctx context.Context, g *planGroup, profile []loadorder.Range) {
	t0 := time.Now()
	// Files complete in the disk cache are read through passthrough or
	// from disk at local speed: prefetching them into RAM only costs.
	files := make(map[string]prefetch.FileBlocks, len(g.paths))
	var paths []string
	for _, path := range g.paths {
		if o := p.objs[path]; !o.CompleteOnDisk() {
			files[path] = o
			paths = append(paths, path)
		}
	}
	if len(files) == 0 {
		return
	}
	plan, from := p.groupPlan(ctx, paths, profile, p.mode != "profile")
	if len(plan) == 0 {
		return
	}
	f := prefetch.NewFollower(plan, files, prefetch.FollowOptions{Window: p.window, BlockSize: p.blockSize, Overshoot: p.ra.Overshoot})
	g.blocks = planBlocks(plan, p.objs, p.blockSize)
	g.follower.Store(f)
	// Opens before the plan was made: a loader may open the index while
	// the headers are read.
	p.opened.Range(func(path, _ any) bool {
		f.Opened(path.(string))
		return true
	})
	// Demand loads so far (headers read for the plan, reads that came
	// first) tell apart what prefetch could not have covered.
	attrs := []any{"from", from, "ranges", len(plan), "bytes", f.PlannedBytes(),
		"took", time.Since(t0).Round(time.Millisecond), "demand_loads_before", p.cache.Stats().DemandLoads}
	if g.model != "" {
		attrs = append([]any{"model", g.model}, attrs...)
	}
	p.log.Info("prefetch plan", attrs...)
}

// fetchSmallFiles prefetches the model's small files (config, tokenizer,
// index), which loaders read first and one at a time: behind a link each
// is a round trip the loader would wait for in turn (45 ms apiece behind
// the S3-like link of docs/benchmarks.md, where a cold pass read five).
// Fetched at mount they arrive at once, beside the plan's header reads.
// At most maxSmallFiles and room are fetched, config.json first, then the
// files nearest the model's root; it returns how many.
func (p *prefetcher) fetchSmallFiles(g *planGroup, room int) int {
	var small []string
	for _, path := range g.paths {
		if o := p.objs[path]; o.Size() > 0 && o.Size() <= p.smallFile && !o.CompleteOnDisk() {
			small = append(small, path)
		}
	}
	slices.SortFunc(small, func(a, b string) int {
		ac, bc := filepath.Base(a) == "config.json", filepath.Base(b) == "config.json"
		switch {
		case ac != bc && ac:
			return -1
		case ac != bc:
			return 1
		}
		if d := strings.Count(a, "/") - strings.Count(b, "/"); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	small = small[:max(0, min(maxSmallFiles, room, len(small)))]
	for _, path := range small {
		o := p.objs[path]
		o.Prefetch(0, o.Size())
	}
	return len(small)
}

// maxSmallFiles bounds the small files of a model fetched at mount: a
// model's repository holds about ten (config, generation config, tokenizer
// files, index, README); a dataset's may hold thousands.
const maxSmallFiles = 16

// groupPlan plans the files at paths: the profile's ranges for them if
// there are any, else, with layers set, the order from their headers. It
// returns what the plan came from, for the log.
func (p *prefetcher) groupPlan(ctx context.Context, paths []string, profile []loadorder.Range, layers bool) ([]loadorder.Range, string) {
	in := make(map[string]bool, len(paths))
	for _, path := range paths {
		in[path] = true
	}
	var plan []loadorder.Range
	for _, r := range profile {
		if in[r.Path] {
			plan = append(plan, r)
		}
	}
	if len(plan) > 0 {
		return plan, "profile " + p.profile
	}
	if !layers {
		return nil, ""
	}
	return p.layerPlan(ctx, paths), "headers (layer order)"
}

// planBlocks returns the blocks plan covers, by path, ascending.
func planBlocks(plan []loadorder.Range, objs map[string]*blockcache.Object, bs int64) map[string][]int64 {
	seen := map[string]map[int64]bool{}
	for _, r := range plan {
		o := objs[r.Path]
		if o == nil || r.Len <= 0 || r.Off < 0 || r.Off >= o.Size() {
			continue
		}
		if seen[r.Path] == nil {
			seen[r.Path] = map[int64]bool{}
		}
		for i := r.Off / bs; i <= (min(r.Off+r.Len, o.Size())-1)/bs; i++ {
			seen[r.Path][i] = true
		}
	}
	blocks := make(map[string][]int64, len(seen))
	for path, set := range seen {
		for i := range set {
			blocks[path] = append(blocks[path], i)
		}
		slices.Sort(blocks[path])
	}
	return blocks
}

// plannedBlocks returns the blocks of path its model's prefetch plan
// covers; none before the plan is made, or without one.
func (p *prefetcher) plannedBlocks(path string) []int64 {
	g := p.groupOf[path]
	if g == nil || g.follower.Load() == nil {
		return nil
	}
	return g.blocks[path]
}

// layerPlan plans the files at paths from their headers.
func (p *prefetcher) layerPlan(ctx context.Context, paths []string) []loadorder.Range {
	files := make([]loadorder.File, 0, len(paths))
	for _, path := range paths {
		o := p.objs[path]
		f, direct := p.files[path]
		direct = direct && p.directHeaders && o.Size() > p.smallFile && !p.headCached(f)
		files = append(files, loadorder.File{Path: path, Size: o.Size(), Open: func() (io.ReaderAt, error) {
			if direct {
				return &headerReader{ctx: ctx, f: f, heads: &p.heads}, nil
			}
			return objectReader{ctx, o}, nil
		}})
	}
	plan, err := loadorder.Plan(files, loadorder.PlanOptions{SmallFile: p.smallFile, Budget: p.headers})
	if err != nil {
		p.log.Warn("prefetch plan is partial", "err", err)
	}
	return plan
}

// profilePlan reads the --profile, keeping the entries of files whose
// version is still the one mounted.
func (p *prefetcher) profilePlan() []loadorder.Range {
	f, err := os.Open(p.profile)
	if err != nil {
		p.log.Warn("no profile to replay", "err", err)
		return nil
	}
	defer f.Close()
	entries, err := loadorder.ReadProfile(bufio.NewReader(f))
	if err != nil {
		p.log.Warn("profile not used", "file", p.profile, "err", err)
		return nil
	}
	kept := loadorder.Filter(entries, p.versions)
	if len(kept) < len(entries) {
		p.log.Info("profile entries for changed or missing files ignored", "ignored", len(entries)-len(kept))
	}
	plan := make([]loadorder.Range, len(kept))
	for i, e := range kept {
		plan[i] = loadorder.Range{Path: e.Path, Off: e.Off, Len: e.Len}
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
	err = loadorder.WriteProfile(w, p.recorder.Entries())
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

// headCached reports whether the first block of f is in the cache (RAM or
// disk), where its header costs the source nothing.
func (p *prefetcher) headCached(f remoteFile) bool {
	return p.cache.ObjectStats([]blockcache.ObjectID{f.cacheID()})[0].Cached.Has(0)
}

// headerChunk is what headerReader fetches at a time: most headers fit in
// one, and a big one (a GGUF vocabulary) takes a few sequential GETs.
const headerChunk = 256 << 10

// headerReader reads a big file's header for the planner straight from the
// source, a chunk at a time, keeping the last chunk. Through the cache each
// header would load a whole block (8 MiB by default) of every shard at
// mount: a reader of one file would pay for all the others' blocks, and a
// reader's first read would share the link with them. A chunk is what the
// header costs, and its blocks are loaded when a reader wants them.
//
// The first chunk is shared with readers (headChunks): whichever of the
// planner and a reader's first read asks first fetches it.
type headerReader struct {
	ctx   context.Context
	f     remoteFile
	off   int64 // of buf in the file
	buf   []byte
	heads *headChunks
}

func (r *headerReader) ReadAt(p []byte, off int64) (int, error) {
	size := r.f.obj.Size
	if off < 0 {
		return 0, fmt.Errorf("header of %s at %d: negative offset", r.f.path, off)
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= size {
			return n, io.EOF
		}
		if at < r.off || at >= r.off+int64(len(r.buf)) {
			start := at - at%headerChunk
			want := min(int64(max(headerChunk, len(p)-n)), size-start)
			if start == 0 && want == min(headerChunk, size) {
				if data, _, ok := r.heads.fetch(r.ctx, r.f); ok && int64(len(data)) == want {
					r.buf, r.off = data, 0 // shared: never written
					n += copy(p[n:], r.buf[at:])
					continue
				}
			}
			if cap(r.buf) < int(want) || r.off == 0 {
				r.buf = make([]byte, want) // the first chunk's may be shared
			}
			r.buf = r.buf[:want]
			m, err := r.f.model.src.ReadAt(r.ctx, r.f.obj, r.buf, start)
			if err != nil && !(errors.Is(err, io.EOF) && int64(m) == want) {
				r.buf = r.buf[:0]
				return n, fmt.Errorf("reading the header of %s at %d: %w", r.f.path, start, err)
			}
			r.off = start
		}
		n += copy(p[n:], r.buf[at-r.off:])
	}
	return n, nil
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
	obj     *blockcache.Object
}

// PassthroughFd is called when the file's reads are about to go to the
// kernel: what the cache holds of it in RAM unread is no longer ahead of
// any reader.
func (b *backedStream) PassthroughFd() (int, bool) {
	b.obj.PassedThrough()
	return int(b.backing.File.Fd()), true
}

func (b *backedStream) Release() {
	b.Stream.Release()
	b.backing.Close()
}

// prime fills the page cache of f, a complete cache file handed to
// passthrough, in the background, front to back. The disk tier writes
// with O_DIRECT, so after the load that filled it none of the file is in
// memory, and a loader that faults it in scattered (header order) leaves
// small folios behind, which every later mapping of the file pays for in
// faults (6× as many here, docs/benchmarks.md): a sequential fill reads it
// in large ones, 2 MiB where the filesystem allows. Files are filled
// maxPrimes at a time, primeChunk mapped at a time, so that the pages
// mapped add at most their product to the mount's RSS; a file or chunk
// already cached is only checked, and a file that does not fit in memory
// is left to its readers (see fitsInMemory). It returns a channel closed
// once the file's fill, started now or before, has ended; nil if there is
// none.
func (p *prefetcher) prime(path string, f *os.File) <-chan struct{} {
	if p.primes == nil {
		return nil // warm's planner serves no reader
	}
	if done, ok := p.primed.Load(path); ok {
		return done.(chan struct{})
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil
	}
	if cached(int(f.Fd()), 0, st.Size) {
		done := make(chan struct{})
		close(done)
		p.primed.Store(path, done)
		return done
	}
	if !fitsInMemory(st.Size) {
		return nil // a later open or idle tick tries again
	}
	done := make(chan struct{})
	if other, started := p.primed.LoadOrStore(path, done); started {
		return other.(chan struct{})
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		p.log.Debug("cache file not primed", "err", err)
		close(done)
		return done
	}
	go func() {
		defer close(done)
		defer unix.Close(fd)
		p.primes <- struct{}{}
		defer func() { <-p.primes }()
		for off := int64(0); off < st.Size; off += primeChunk {
			n := min(primeChunk, st.Size-off)
			if cached(fd, off, n) {
				continue
			}
			data, err := unix.Mmap(fd, off, int(n), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				p.log.Debug("cache file not primed", "err", err)
				return
			}
			// Sequential: the fill's touches do not mark the pages as
			// used. Huge pages: the fault path reads the file in 2 MiB
			// folios where its filesystem has them, not in the disk's
			// readahead size (128 KiB by default), so that later mappings
			// of the file are mapped 2 MiB at a time; the fill is faster
			// too (docs/benchmarks.md). Both are hints: kernels without
			// them fill all the same.
			_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
			_ = unix.Madvise(data, unix.MADV_HUGEPAGE)
			err = unix.Madvise(data, unix.MADV_POPULATE_READ)
			unix.Munmap(data)
			if err != nil {
				p.log.Debug("cache file not primed", "err", err)
				return
			}
		}
	}()
	return done
}

// awaitFill holds a passthrough open until the file's fill (done, from
// prime) has ended, for at most openFillWait. A loader let in at once
// faults the file in from the disk beside the fill, by the disk's small
// readahead, and leaves one-page folios wherever it gets ahead of it: a
// remount's shuffled mmap load of 880 MiB from the disk took 370–480 ms
// that way, and every later mapping of the files 9–13× the faults,
// against 220–235 ms with the open held (docs/benchmarks.md). Past the
// bound, the loader's reads go on beside the rest of the fill.
func awaitFill(done <-chan struct{}) {
	if done == nil {
		return
	}
	t := time.NewTimer(openFillWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// openFillWait bounds how long a passthrough open waits for its file's
// fill: 1–8 GB at the 1–8 GB/s of NVMe disks and this machine's, a shard
// or more of most checkpoints.
const openFillWait = time.Second

// fillWhenIdle primes the cache files of the objects this mount opened
// that are complete on disk, once a tick passed with no read or load
// through the cache, until each is primed or ctx ends. A reload on this
// mount or a remount then finds the files in the page cache, filled front
// to back, and its opens wait for no fill (awaitFill) or race none past
// the wait's bound, where the loader's scattered faults leave small
// folios that every later mapping pays for (a shuffled mmap touch of a
// remount took 48 ms per 250 MiB after such a race, 20 ms after a fill
// alone, docs/benchmarks.md). Waiting for a quiet tick keeps the disk
// reads off the cold load; files never opened here are left alone, and
// so is a file that does not fit in memory (fitsInMemory).
func (p *prefetcher) fillWhenIdle(ctx context.Context, tick time.Duration) {
	if p.primes == nil || p.mode == "off" || p.cache.Stats().DiskCapacity == 0 {
		return
	}
	paths := make([]string, 0, len(p.objs))
	for path := range p.objs {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	t := time.NewTicker(tick)
	defer t.Stop()
	last := activity(p.cache.Stats())
	for len(paths) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := activity(p.cache.Stats()); now != last {
			last = now
			continue
		}
		left := paths[:0]
		for _, path := range paths {
			if _, done := p.primed.Load(path); done {
				continue
			}
			if _, ok := p.opened.Load(path); !ok {
				left = append(left, path)
				continue
			}
			if !fitsInMemory(p.files[path].obj.Size) {
				left = append(left, path)
				continue
			}
			// Backing is refused until the object is complete and has
			// passed its store's check, which it starts: a later tick
			// retries.
			b, ok := p.objs[path].Backing()
			if !ok {
				left = append(left, path)
				continue
			}
			p.prime(path, b.File)
			b.Close()
		}
		paths = left
	}
}

// fitsInMemory reports whether a file of size bytes may be filled into the
// page cache: at most half of what the process may still use, its cgroup's
// limit included. The page cache a fill brings in is charged to the
// mount's cgroup, which for a CSI volume is limited to about its RAM
// cache: a bigger fill would only push out what it just read, and press
// the mount's own memory.
func fitsInMemory(size int64) bool {
	room, _, ok := cgroups.Headroom()
	return !ok || size <= room/2
}

// activity sums the counters that move while anything reads or loads
// through the cache.
func activity(s blockcache.Stats) int64 { return s.Hits + s.Misses + s.Loads + s.DiskHits }

// cached reports whether the n bytes at off of the file fd are all in the
// page cache, from cachestat(2) (Linux 6.5+, so wherever passthrough
// runs): prime leaves those alone, so that a file a reader already holds
// costs it only the check. cachestat counts folios in the kernel, where
// mincore(2) on a mapping looked up every 4 KiB page and cost a remount's
// reader 7 ms of CPU per GiB beside it; 10–40 µs per GiB here.
func cached(fd int, off, n int64) bool {
	var st unix.Cachestat_t
	r := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	if err := unix.Cachestat(uint(fd), &r, &st, 0); err != nil {
		return false
	}
	page := int64(os.Getpagesize())
	return int64(st.Cache) >= (n+page-1)/page
}

// primeChunk is how much of a cache file prime maps at a time, and
// maxPrimes how many files it fills at once.
const (
	primeChunk = 16 << 20
	maxPrimes  = 2
)
