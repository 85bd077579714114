package mount

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/internal/mountinfo"
	"github.com/modelfs/modelfs/mount/config"
	"github.com/modelfs/modelfs/prefetch"
)

// Options are what an Engine needs besides its Config.
type Options struct {
	// Logger receives the engine's log; nil discards it.
	Logger *slog.Logger
	// Wrap, if set, puts layers in front of each opened source.
	Wrap WrapFunc
	// Stdout receives the ready line; nil is os.Stdout.
	Stdout io.Writer
}

// Engine is one mount's sources, block cache, prefetcher and stats, ready
// to be served by fs: New lists the sources and builds the cache, Files
// hands fs what to show, Serve mounts it.
type Engine struct {
	cfg         config.Config
	log         *slog.Logger
	out         io.Writer
	r           *remote
	pf          *prefetcher
	stats       *statsReporter
	metrics     *metrics
	stopMetrics func()
}

// New opens and lists the sources of cfg, which has passed Validate, and
// builds the cache in front of them; with cfg.MetricsAddr it serves the
// metrics first, so that a bad address fails before anything is listed.
// The caller closes the Engine.
func New(ctx context.Context, cfg config.Config, opts Options) (*Engine, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := opts.Stdout
	if out == nil {
		out = os.Stdout
	}
	specs, err := specsFor(cfg.Manifest, cfg.Source)
	if err != nil {
		return nil, err
	}
	memCache := cfg.MemCacheBytes()
	pf := &prefetcher{
		mode: string(cfg.Prefetch), profile: cfg.Profile, log: log, smallFile: cfg.SmallFile,
		// The kernel's readahead past a read ends within two blocks of the
		// default size (prefetch.DefaultOvershoot); smaller blocks are
		// for smaller files, whose reads it overshoots less.
		ra:        prefetch.ReadaheadOptions{Max: cfg.Readahead, Overshoot: min(prefetch.DefaultOvershoot, 2*cfg.BlockSize)},
		blockSize: cfg.BlockSize, window: min(256<<20, memCache/2),
		directHeaders: true, heads: headChunks{log: log}, primes: make(chan struct{}, maxPrimes),
	}
	if cfg.Prefetch == config.PrefetchOff {
		pf.ra.Disabled = true
	}
	if cfg.RecordProfile != "" {
		pf.recorder = prefetch.NewRecorder(cfg.BlockSize)
	}
	e := &Engine{cfg: cfg, log: log, out: out, pf: pf, stopMetrics: func() {}}
	if cfg.MetricsAddr != "" {
		e.metrics = newMetrics()
		if e.stopMetrics, err = serveMetrics(e.metrics, cfg.MetricsAddr, cfg.Pprof, log); err != nil {
			return nil, err
		}
	}
	e.r, err = openRemote(ctx, cfg.Sources, openOptions{log: log, memBytes: memCache, metrics: e.metrics, wrap: opts.Wrap}, specs, cfg.Manifest)
	if err != nil {
		e.stopMetrics()
		return nil, err
	}
	if e.metrics != nil {
		e.metrics.mount.cache.Store(e.r.cache)
		if e.r.shared != nil {
			e.metrics.mount.shared.Store(e.r.shared)
		}
	}
	pf.attach(e.r)
	e.stats = newStatsReporter(e.r, pf, pf.mode, cfg.BlockSize)
	if e.metrics != nil {
		e.metrics.stats.Store(e.stats)
	}
	return e, nil
}

// Files are the files to show, each with the Opener that reads it
// through the cache and the prefetcher.
func (e *Engine) Files() []fs.File {
	files := make([]fs.File, 0, len(e.r.files))
	for _, f := range e.r.files {
		files = append(files, fs.File{Path: f.path, Size: f.obj.Size, ModTime: f.obj.ModTime, Content: e.pf.opener(f)})
	}
	return files
}

// idleTick is how long a mount must see no reads before it fills the page
// cache of complete cache files (prefetcher.fillWhenIdle).
const idleTick = 500 * time.Millisecond

// StartPrefetch makes each model's plan and follows it until ctx ends;
// it returns once the plans are made.
func (e *Engine) StartPrefetch(ctx context.Context) { e.pf.start(ctx) }

// Snapshot is the mount's observability snapshot at this moment.
func (e *Engine) Snapshot() *Snapshot { return e.stats.collect(time.Now()) }

// Close finishes the cache's write-backs and stops serving metrics.
func (e *Engine) Close() {
	e.r.close()
	e.stopMetrics()
}

// Serve mounts the files at cfg.Mountpoint, prints the ready line, starts
// prefetching, and serves until ctx ends (then unmounts) or the mount is
// unmounted from outside. It writes the recorded profile, if asked for,
// and logs the mount's accounts before it returns.
func (e *Engine) Serve(ctx context.Context) error {
	cfg, log, mountpoint := e.cfg, e.log, e.cfg.Mountpoint
	srv, err := fs.Mount(mountpoint, fs.Options{
		Files: e.Files(), FsName: fsName(e.r), Logger: log,
		AllowOther: cfg.AllowOther, Debug: cfg.DebugFUSE,
		Snapshot: e.stats.snapshot, Observer: e.metrics.fuseObserver(),
	})
	if err != nil {
		return err
	}
	e.stats.mounted(srv)
	if e.metrics != nil {
		e.metrics.mount.fuse.Store(srv.Stats)
	}
	for _, s := range srv.Skipped {
		log.Warn("object not shown", "key", fmt.Sprintf("%q", s.Path), "reason", s.Reason)
	}
	var total int64
	shown := e.stats.files()
	for _, f := range shown {
		total += f.obj.Size
	}
	// Listing the sources, building the engine and mounting leave a few
	// MB of garbage in a heap whose first collections are due at 4 MB:
	// collected now, before readers are told the mount is ready, rather
	// than in their first reads, which a collection under way held up by
	// 10–25 ms on a fresh mount (docs/benchmarks.md).
	runtime.GC()
	fmt.Fprintf(e.out, "%s%s mounted at %s (%d files, %s)\n", config.ReadyPrefix, e.r, mountpoint, len(shown), formatSize(total))
	go e.pf.start(ctx)
	// The fill stops before Serve returns, and so before the cache closes.
	fillCtx, stopFill := context.WithCancel(ctx)
	filled := make(chan struct{})
	go func() {
		defer close(filled)
		e.pf.fillWhenIdle(fillCtx, idleTick)
	}()
	defer func() {
		stopFill()
		<-filled
	}()
	defer func() {
		if rec := cfg.RecordProfile; rec != "" {
			if err := e.pf.saveProfile(rec); err != nil {
				log.Error("profile not saved", "err", err)
			}
		}
	}()

	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
		log.Info("unmounted externally", "mountpoint", mountpoint)
		logSummary(log, srv, e.r)
		return nil
	case <-ctx.Done():
	}
	log.Info("unmounting", "mountpoint", mountpoint)
	if err := srv.Unmount(); err != nil {
		// Busy: detach now; the kernel finishes once the last file closes.
		log.Warn("mount busy, detaching lazily", "err", err)
		if err := mountinfo.Unmount(mountpoint); err != nil {
			return err
		}
	}
	<-done
	logSummary(log, srv, e.r)
	return nil
}

// fsName is what /proc/mounts shows as the mount's source: the source,
// or the manifest file's name, kept to characters mount options allow.
func fsName(r *remote) string {
	if r.manifest == "" {
		return r.models[0].src.String()
	}
	name := []byte(filepath.Base(r.manifest))
	for i, b := range name {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-' || b == '_') {
			name[i] = '_'
		}
	}
	return "manifest:" + string(name)
}

// logSummary is the mount's one line of accounts, written at unmount
// once the cache has finished its write-backs; its keys are the
// snapshot's names.
func logSummary(log *slog.Logger, srv *fs.Server, r *remote) {
	r.close()
	log.Info("unmounted", logAttrs(r.totals(), fuseTotals(srv.Stats))...)
}
