package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/prefetch"
)

func mountCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return &cli.Command{
		Name:        "mount",
		Usage:       "mount a remote model read-only; runs in the foreground until SIGINT/SIGTERM",
		ArgsUsage:   "SOURCE MOUNTPOINT | --manifest FILE MOUNTPOINT",
		Description: sourceHelp + "\n\n" + sourceEnvHelp + "\n\n" + manifestHelp,
		Flags: append(sourceFlags(), []cli.Flag{
			// Only the environment should set it (see sourceEnvHelp).
			&cli.StringFlag{Name: "source", Hidden: true, EnvVars: env("SOURCE")},
			&cli.StringFlag{Name: "manifest", Usage: "serve the models this JSON file names, each in a subdirectory, instead of one SOURCE", EnvVars: env("MANIFEST")},
			&cli.StringFlag{Name: "mem-cache", Value: "auto", Usage: "RAM block cache budget (auto: an eighth of memory, 256MiB to 1GiB)", EnvVars: env("MEM_CACHE")},
			&cli.StringFlag{Name: "prefetch", Value: "auto", Usage: "auto, layer, profile, readahead or off (auto: --profile if given and usable, else layer order from the model's headers; readahead always)", EnvVars: env("PREFETCH")},
			&cli.StringFlag{Name: "profile", Usage: "replay this recorded load profile at mount time", EnvVars: env("PROFILE")},
			&cli.StringFlag{Name: "record-profile", Usage: "write the order blocks were first read to this file on unmount", EnvVars: env("RECORD_PROFILE")},
			&cli.StringFlag{Name: "small-file", Value: "1MiB", Usage: "files up to this size are fetched whole on first open", EnvVars: env("SMALL_FILE")},
			&cli.StringFlag{Name: "readahead", Value: "128MiB", Usage: "largest readahead window per open file", EnvVars: env("READAHEAD")},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users read the mount (needs user_allow_other for non-root)", EnvVars: env("ALLOW_OTHER")},
			&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus /metrics on this address, like 127.0.0.1:9090 (port 0: any free port, logged) or unix:/path/to.sock", EnvVars: env("METRICS_ADDR")},
			&cli.BoolFlag{Name: "pprof", Usage: "also serve /debug/pprof/ on --metrics-addr", EnvVars: env("PPROF")},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request", EnvVars: env("DEBUG_FUSE")},
		}...),
		Action: runMount,
	}
}

const sourceEnvHelp = `With MODELFS_SOURCE set, SOURCE may be left out: the environment, unlike
the command line, is not readable by every user (ps, /proc), so a URL with
a signature or token in its query belongs there.`

func runMount(c *cli.Context) error {
	manifest, source := c.String("manifest"), c.String("source")
	switch {
	case manifest != "" && (c.NArg() == 2 || source != ""):
		return usagef("mount: --manifest and a SOURCE are mutually exclusive")
	case manifest != "" && c.NArg() != 1:
		return usagef("mount: with --manifest, want one argument, MOUNTPOINT (got %d)", c.NArg())
	case manifest == "" && c.NArg() == 1 && source != "":
		// The source came from MODELFS_SOURCE.
	case manifest == "" && c.NArg() != 2:
		return usagef("mount: want two arguments, SOURCE and MOUNTPOINT, or MODELFS_SOURCE and MOUNTPOINT (got %d)", c.NArg())
	default:
		source = c.Args().First()
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	mountpoint := c.Args().Get(c.NArg() - 1)
	specs, err := specsFor(manifest, source)
	if err != nil {
		return err
	}
	memCache, err := sizeOrAuto(c.String("mem-cache"), "--mem-cache", defaultMemCache)
	if err != nil {
		return err
	}
	raMax, err := parseSize(c.String("readahead"), "--readahead")
	if err != nil {
		return err
	}
	blockSize, err := blockSizeFlag(c)
	if err != nil {
		return err
	}
	if memCache < 2*blockSize {
		return usagef("--mem-cache %s: want at least two blocks (%d bytes)", c.String("mem-cache"), 2*blockSize)
	}
	smallFile, err := parseSize(c.String("small-file"), "--small-file")
	if err != nil {
		return err
	}
	pf := &prefetcher{
		mode: c.String("prefetch"), profile: c.String("profile"), log: log, smallFile: smallFile,
		ra: prefetch.ReadaheadOptions{Max: raMax}, blockSize: blockSize, window: min(256<<20, memCache/2),
		directHeaders: true,
	}
	switch pf.mode {
	case "auto", "layer", "readahead":
	case "profile":
		if pf.profile == "" {
			return usagef("--prefetch profile needs --profile FILE")
		}
	case "off":
		pf.ra.Disabled = true
	default:
		return usagef("--prefetch %q: want auto, layer, profile, readahead or off", pf.mode)
	}
	if rec := c.String("record-profile"); rec != "" {
		if st, err := os.Stat(filepath.Dir(rec)); err != nil || !st.IsDir() {
			return usagef("--record-profile %s: its directory does not exist", rec)
		}
		pf.recorder = prefetch.NewRecorder(blockSize)
	}

	// RAM cache blocks live outside the Go heap but inside the cgroup.
	applyMemoryLimit(log, memCache, mountHeapLimit)

	var m *metrics
	if addr := c.String("metrics-addr"); addr != "" {
		m = newMetrics()
		stopMetrics, err := serveMetrics(m, addr, c.Bool("pprof"), log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	} else if c.Bool("pprof") {
		return usagef("--pprof needs --metrics-addr")
	}

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := openRemote(ctx, c, log, memCache, m, specs, manifest)
	if err != nil {
		return err
	}
	cache := r.cache
	defer cache.Close()
	if m != nil {
		m.mount.cache.Store(cache)
	}
	pf.attach(r)
	files := make([]fs.File, 0, len(r.files))
	for _, f := range r.files {
		files = append(files, fs.File{Path: f.path, Size: f.obj.Size, ModTime: f.obj.ModTime, Content: pf.opener(f)})
	}
	stats := newStatsReporter(r, pf, pf.mode, blockSize)

	srv, err := fs.Mount(mountpoint, fs.Options{
		Files: files, FsName: fsName(r), Logger: log,
		AllowOther: c.Bool("allow-other"), Debug: c.Bool("debug-fuse"),
		Snapshot: stats.snapshot, Observer: m.fuseObserver(),
	})
	if err != nil {
		return err
	}
	stats.mounted(srv)
	if m != nil {
		m.mount.fuse.Store(srv.Stats)
	}
	for _, s := range srv.Skipped {
		log.Warn("object not shown", "key", fmt.Sprintf("%q", s.Path), "reason", s.Reason)
	}
	var total int64
	shown := stats.files()
	for _, f := range shown {
		total += f.obj.Size
	}
	fmt.Printf("ready: %s mounted at %s (%d files, %s)\n", r, mountpoint, len(shown), formatSize(total))
	go pf.start(ctx)
	defer func() {
		if rec := c.String("record-profile"); rec != "" {
			if err := pf.saveProfile(rec); err != nil {
				log.Error("profile not saved", "err", err)
			}
		}
	}()

	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
		log.Info("unmounted externally", "mountpoint", mountpoint)
		logSummary(log, srv, cache)
		return nil
	case <-ctx.Done():
	}
	log.Info("unmounting", "mountpoint", mountpoint)
	if err := srv.Unmount(); err != nil {
		// Busy: detach now; the kernel finishes once the last file closes.
		log.Warn("mount busy, detaching lazily", "err", err)
		if err := fs.Unmount(mountpoint); err != nil {
			return err
		}
	}
	<-done
	logSummary(log, srv, cache)
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
// once the cache has finished its write-backs.
func logSummary(log *slog.Logger, srv *fs.Server, cache *blockcache.Cache) {
	cache.Close()
	st := cache.Stats()
	log.Info("unmounted",
		"fuse_reads", srv.Stats.Reads.Load(), "fuse_read_bytes", srv.Stats.ReadBytes.Load(), "read_errors", srv.Stats.ReadErrors.Load(),
		"block_hits", st.Hits, "block_misses", st.Misses, "demand_loads", st.DemandLoads, "remote_loads", st.Loads, "remote_bytes", st.BytesLoaded,
		"prefetches", st.Prefetches, "prefetch_bytes", st.PrefetchBytes, "prefetch_unused_bytes", st.PrefetchWasted, "disk_hits", st.DiskHits, "disk_corrupt", st.DiskCorrupt, "disk_writes", st.DiskWrites)
}
