package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/prefetch"
)

func mountCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a remote model read-only; runs in the foreground until SIGINT/SIGTERM",
		ArgsUsage: "SOURCE MOUNTPOINT",
		Description: `SOURCE is one of
   s3://bucket/prefix       S3 or an S3-compatible store (--endpoint); credentials from
                            the AWS default chain (env, shared config, web identity, instance role)
   https://host/path/       a directory with a manifest (modelfs.json or model.safetensors.index.json)
   https://host/file        a single file
   file:///dir              a local or NFS directory`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "region", Usage: "S3 region (default: the AWS chain, then us-east-1)", EnvVars: env("REGION")},
			&cli.StringFlag{Name: "endpoint", Usage: "S3-compatible endpoint URL; implies path-style addressing", EnvVars: env("ENDPOINT")},
			&cli.StringFlag{Name: "aws-profile", Usage: "AWS shared-config profile (default: AWS_PROFILE, then default)", EnvVars: env("AWS_PROFILE")},
			&cli.BoolFlag{Name: "no-sign-request", Usage: "send anonymous S3 requests (public buckets)", EnvVars: env("NO_SIGN_REQUEST")},
			&cli.StringFlag{Name: "http-token-env", Value: "MODELFS_HTTP_TOKEN", Usage: "name of the environment variable holding an HTTP bearer token", EnvVars: env("HTTP_TOKEN_ENV")},
			&cli.StringFlag{Name: "block-size", Value: "8MiB", Usage: "fetch and cache unit", EnvVars: env("BLOCK_SIZE")},
			&cli.IntFlag{Name: "concurrency", Value: 16, Usage: "parallel ranged GETs", EnvVars: env("CONCURRENCY")},
			&cli.StringFlag{Name: "mem-cache", Value: "auto", Usage: "RAM block cache budget (auto: a quarter of memory, at most 8GiB)", EnvVars: env("MEM_CACHE")},
			&cli.StringFlag{Name: "cache-dir", Usage: "persistent block cache directory, shareable by several mounts", EnvVars: env("CACHE_DIR")},
			&cli.StringFlag{Name: "cache-size", Value: "auto", Usage: "disk cache budget (auto: 80% of the free space at mount time)", EnvVars: env("CACHE_SIZE")},
			&cli.StringFlag{Name: "prefetch", Value: "auto", Usage: "auto, layer, profile, readahead or off (auto: --profile if given and usable, else layer order from the model's headers; readahead always)", EnvVars: env("PREFETCH")},
			&cli.StringFlag{Name: "profile", Usage: "replay this recorded load profile at mount time", EnvVars: env("PROFILE")},
			&cli.StringFlag{Name: "record-profile", Usage: "write the order blocks were first read to this file on unmount", EnvVars: env("RECORD_PROFILE")},
			&cli.StringFlag{Name: "small-file", Value: "1MiB", Usage: "files up to this size are fetched whole on first open", EnvVars: env("SMALL_FILE")},
			&cli.StringFlag{Name: "readahead", Value: "128MiB", Usage: "largest readahead window per open file", EnvVars: env("READAHEAD")},
			&cli.DurationFlag{Name: "request-timeout", Value: 60 * time.Second, Usage: "limit for one GET attempt, body included", EnvVars: env("REQUEST_TIMEOUT")},
			&cli.IntFlag{Name: "retries", Value: 6, Usage: "attempts per request before EIO", EnvVars: env("RETRIES")},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users read the mount (needs user_allow_other for non-root)", EnvVars: env("ALLOW_OTHER")},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request", EnvVars: env("DEBUG_FUSE")},
		},
		Action: runMount,
	}
}

func runMount(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("mount: want two arguments, SOURCE and MOUNTPOINT (got %d)", c.NArg())
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	loc, err := fetch.ParseLocation(c.Args().Get(0))
	if err != nil {
		return err
	}
	mountpoint := c.Args().Get(1)
	blockSize, err := parseSize(c.String("block-size"), "--block-size")
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
	if blockSize < 64<<10 || blockSize > 256<<20 {
		return fmt.Errorf("--block-size %s: want 64KiB to 256MiB", c.String("block-size"))
	}
	if memCache < 2*blockSize {
		return fmt.Errorf("--mem-cache %s: want at least two blocks (%d bytes)", c.String("mem-cache"), 2*blockSize)
	}
	if c.Int("concurrency") < 1 || c.Int("concurrency") > 1024 {
		return fmt.Errorf("--concurrency %d: want 1 to 1024", c.Int("concurrency"))
	}
	smallFile, err := parseSize(c.String("small-file"), "--small-file")
	if err != nil {
		return err
	}
	pf := &prefetcher{
		mode: c.String("prefetch"), profile: c.String("profile"), log: log, smallFile: smallFile,
		ra: prefetch.ReadaheadOptions{Max: raMax}, blockSize: blockSize, window: min(256<<20, memCache/2),
	}
	switch pf.mode {
	case "auto", "layer", "readahead":
	case "profile":
		if pf.profile == "" {
			return fmt.Errorf("--prefetch profile needs --profile FILE")
		}
	case "off":
		pf.ra.Disabled = true
	default:
		return fmt.Errorf("--prefetch %q: want auto, layer, profile, readahead or off", pf.mode)
	}
	if rec := c.String("record-profile"); rec != "" {
		if st, err := os.Stat(filepath.Dir(rec)); err != nil || !st.IsDir() {
			return fmt.Errorf("--record-profile %s: its directory does not exist", rec)
		}
		pf.recorder = prefetch.NewRecorder(blockSize)
	}

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	retry := fetch.RetryOptions{MaxAttempts: c.Int("retries"), AttemptTimeout: c.Duration("request-timeout")}
	src, err := fetch.Open(ctx, loc, fetch.OpenOptions{
		S3: fetch.S3Options{
			Region: c.String("region"), Endpoint: c.String("endpoint"), Profile: c.String("aws-profile"),
			NoSignRequest: c.Bool("no-sign-request"), MaxConns: c.Int("concurrency") * 2,
		},
		HTTP:  fetch.HTTPOptions{Token: os.Getenv(c.String("http-token-env"))},
		Retry: retry,
	})
	if err != nil {
		return err
	}
	var disk *blockcache.DiskOptions
	if dir := c.String("cache-dir"); dir != "" {
		size, err := sizeOrAuto(c.String("cache-size"), "--cache-size", func() int64 { return defaultDiskCache(dir) })
		if err != nil {
			return err
		}
		disk = &blockcache.DiskOptions{Dir: dir, MaxBytes: size}
	}
	objs, err := list(ctx, src, c.String("cache-dir"), log)
	if err != nil {
		return err
	}

	loader := &sourceLoader{src: src, objs: make(map[string]fetch.Object, len(objs))}
	cache := blockcache.New(blockcache.Options{
		BlockSize: blockSize, MemBytes: memCache, Workers: c.Int("concurrency"), Disk: disk, Logger: log,
	}, loader)
	defer cache.Close()
	files := make([]fs.File, 0, len(objs))
	var total int64
	pf.objs = make(map[string]*blockcache.Object, len(objs))
	pf.fetchObjs = loader.objs
	for _, o := range objs {
		loader.objs[o.Key] = o
		pf.objs[o.Key] = cache.Object(blockcache.ObjectID{Name: o.Key, Version: o.Version(), Size: o.Size})
		files = append(files, fs.File{Path: o.Key, Size: o.Size, ModTime: o.ModTime, Content: pf.opener(o)})
		total += o.Size
	}

	srv, err := fs.Mount(mountpoint, fs.Options{
		Files: files, FsName: src.String(), Logger: log,
		AllowOther: c.Bool("allow-other"), Debug: c.Bool("debug-fuse"),
	})
	if err != nil {
		return err
	}
	for _, s := range srv.Skipped {
		log.Warn("object not shown", "key", fmt.Sprintf("%q", s.Path), "reason", s.Reason)
	}
	fmt.Printf("ready: %s mounted at %s (%d files, %s)\n", src, mountpoint, len(files)-len(srv.Skipped), formatSize(total))
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

// logSummary is the mount's one line of accounts, written at unmount
// once the cache has finished its write-backs.
func logSummary(log *slog.Logger, srv *fs.Server, cache *blockcache.Cache) {
	cache.Close()
	st := cache.Stats()
	log.Info("unmounted",
		"fuse_reads", srv.Stats.Reads.Load(), "fuse_read_bytes", srv.Stats.ReadBytes.Load(), "read_errors", srv.Stats.ReadErrors.Load(),
		"block_hits", st.Hits, "block_misses", st.Misses, "demand_loads", st.DemandLoads, "remote_loads", st.Loads, "remote_bytes", st.BytesLoaded,
		"prefetches", st.Prefetches, "disk_hits", st.DiskHits, "disk_corrupt", st.DiskCorrupt, "disk_writes", st.DiskWrites)
}

// list lists the source. Listing is the first remote call, so a bad bucket
// or refused credentials fail here. With a cache dir the listing is saved,
// and when the source cannot be reached the saved one is used, so that
// cached blocks stay readable through an outage.
func list(ctx context.Context, src fetch.Source, cacheDir string, log *slog.Logger) ([]fetch.Object, error) {
	listCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	objs, err := src.List(listCtx)
	cancel()
	if cacheDir == "" {
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", src, err)
		}
		return objs, nil
	}
	sum := sha256.Sum256([]byte(src.String()))
	saved := filepath.Join(cacheDir, "listings", hex.EncodeToString(sum[:8])+".json")
	if err == nil {
		if err := fetch.SaveListing(saved, src.String(), objs); err != nil {
			log.Warn("could not save the listing for offline use", "err", err)
		}
		return objs, nil
	}
	if errors.Is(err, fetch.ErrAccess) || errors.Is(err, fetch.ErrNotFound) || ctx.Err() != nil {
		return nil, fmt.Errorf("listing %s: %w", src, err)
	}
	old, at, lerr := fetch.LoadListing(saved, src.String())
	if lerr != nil {
		return nil, fmt.Errorf("listing %s: %w", src, err)
	}
	log.Warn("source unreachable: using the saved listing; only cached blocks can be read", "source", src.String(), "saved_at", at, "err", err)
	return old, nil
}

// sourceLoader feeds the block cache from the source, by pinned object.
type sourceLoader struct {
	src  fetch.Source
	objs map[string]fetch.Object // written before the mount, read-only after
}

func (l *sourceLoader) LoadBlock(ctx context.Context, id blockcache.ObjectID, off int64, p []byte) error {
	obj, ok := l.objs[id.Name]
	if !ok || obj.Version() != id.Version {
		return fmt.Errorf("object %q version %s is not part of this mount", id.Name, id.Version)
	}
	n, err := l.src.ReadAt(ctx, obj, p, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
		return err
	}
	return nil
}
