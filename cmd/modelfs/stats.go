package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fs"
)

// statsFormat marks the stats file's JSON, and versions it.
const statsFormat = "modelfs-stats/1"

// mountStats is the content of a mount's stats file (fs.StatsName).
type mountStats struct {
	Format      string      `json:"format"`
	Source      string      `json:"source"`
	StartedAt   time.Time   `json:"started_at"`
	GeneratedAt time.Time   `json:"generated_at"`
	BlockSize   int64       `json:"block_size"`
	Prefetch    string      `json:"prefetch"`
	Files       []fileStats `json:"files"`
	// Models has one entry per manifest model; none for a single SOURCE.
	Models []modelTotals `json:"models,omitempty"`
	Totals fileTotals    `json:"totals"`
	Cache  cacheTotals   `json:"cache"`
	FUSE   fuseTotals    `json:"fuse"`
}

// fileStats is one file of the mount.
type fileStats struct {
	Path  string `json:"path"`
	Model string `json:"model,omitempty"`
	Size  int64  `json:"size"`
	// CachedBytes counts the bytes of the file's blocks in RAM or on disk.
	CachedBytes   int64   `json:"cached_bytes"`
	CachedPercent float64 `json:"cached_percent"`
	RAMBytes      int64   `json:"ram_bytes"`
	DiskBytes     int64   `json:"disk_bytes"`
	// FetchedBytes is what this mount fetched of the file from its source.
	FetchedBytes int64         `json:"fetched_bytes"`
	Prefetch     *planProgress `json:"prefetch,omitempty"`
	// Verify is the file against its store's checksum: pending (not
	// every block loaded yet), verified, unverified (the store keeps no
	// usable checksum) or failed (reads fail with EIO).
	Verify string `json:"verify"`
}

// planProgress is the prefetch plan's share of a file: the bytes of the
// blocks it covers, and how many of those are cached.
type planProgress struct {
	PlannedBytes int64 `json:"planned_bytes"`
	DoneBytes    int64 `json:"done_bytes"`
}

// fileTotals adds up files.
type fileTotals struct {
	Files         int           `json:"files"`
	Size          int64         `json:"size"`
	CachedBytes   int64         `json:"cached_bytes"`
	CachedPercent float64       `json:"cached_percent"`
	FetchedBytes  int64         `json:"fetched_bytes"`
	Prefetch      *planProgress `json:"prefetch,omitempty"`
}

func (t *fileTotals) add(f fileStats) {
	t.Files++
	t.Size += f.Size
	t.CachedBytes += f.CachedBytes
	t.CachedPercent = percent(t.CachedBytes, t.Size)
	t.FetchedBytes += f.FetchedBytes
	if f.Prefetch != nil {
		if t.Prefetch == nil {
			t.Prefetch = &planProgress{}
		}
		t.Prefetch.PlannedBytes += f.Prefetch.PlannedBytes
		t.Prefetch.DoneBytes += f.Prefetch.DoneBytes
	}
}

type modelTotals struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	fileTotals
}

// cacheTotals are the block cache's counters (blockcache.Stats).
type cacheTotals struct {
	RAMBytes            int64 `json:"ram_bytes"`
	RAMCapacity         int64 `json:"ram_capacity_bytes"`
	DiskBytes           int64 `json:"disk_bytes"`
	DiskCapacity        int64 `json:"disk_capacity_bytes"`
	Hits                int64 `json:"hits"`
	Misses              int64 `json:"misses"`
	Evictions           int64 `json:"evictions"`
	DiskHits            int64 `json:"disk_hits"`
	DiskMisses          int64 `json:"disk_misses"`
	DiskEvictions       int64 `json:"disk_evictions"`
	DiskCorrupt         int64 `json:"disk_corrupt"`
	Loads               int64 `json:"loads"`
	LoadErrors          int64 `json:"load_errors"`
	FetchedBytes        int64 `json:"fetched_bytes"`
	PrefetchBytes       int64 `json:"prefetch_bytes"`
	PrefetchUsedBytes   int64 `json:"prefetch_used_bytes"`
	PrefetchWastedBytes int64 `json:"prefetch_wasted_bytes"`
	VerifiedFiles       int64 `json:"verified_files"`
	UnverifiedFiles     int64 `json:"unverified_files"`
	VerifyFailures      int64 `json:"verify_failures"`
}

// fuseTotals count the reads modelfs served itself.
type fuseTotals struct {
	Reads      int64 `json:"reads"`
	ReadBytes  int64 `json:"read_bytes"`
	ReadErrors int64 `json:"read_errors"`
}

// statsReporter makes a mount's stats snapshots.
type statsReporter struct {
	source    string
	prefetch  string
	started   time.Time
	blockSize int64
	cache     *blockcache.Cache
	pf        *prefetcher
	manifest  bool
	models    []*modelSource
	shown     atomic.Pointer[[]remoteFile] // the files in the mount
	fuse      atomic.Pointer[fs.Stats]
}

func newStatsReporter(r *remote, pf *prefetcher, mode string, blockSize int64) *statsReporter {
	s := &statsReporter{source: r.String(), prefetch: mode, started: time.Now(), blockSize: blockSize,
		cache: r.cache, pf: pf, manifest: r.manifest != "", models: r.models}
	s.shown.Store(&r.files)
	return s
}

// mounted tells the reporter which files the mount left out, and where
// its read counters are.
func (s *statsReporter) mounted(srv *fs.Server) {
	skipped := make(map[string]bool, len(srv.Skipped))
	for _, sk := range srv.Skipped {
		skipped[sk.Path] = true
	}
	all := s.files()
	shown := make([]remoteFile, 0, len(all))
	for _, f := range all {
		if !skipped[f.path] {
			shown = append(shown, f)
		}
	}
	s.shown.Store(&shown)
	s.fuse.Store(srv.Stats)
}

// files are the files in the mount.
func (s *statsReporter) files() []remoteFile { return *s.shown.Load() }

// snapshot is the stats file's content at this moment.
func (s *statsReporter) snapshot() ([]byte, error) {
	b, err := json.MarshalIndent(s.collect(time.Now()), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return append(b, '\n'), nil
}

func (s *statsReporter) collect(now time.Time) *mountStats {
	files := s.files()
	ids := make([]blockcache.ObjectID, len(files))
	for i, f := range files {
		ids[i] = f.cacheID()
	}
	objs := s.cache.ObjectStats(ids)
	st := &mountStats{
		Format: statsFormat, Source: s.source, StartedAt: s.started, GeneratedAt: now,
		BlockSize: s.blockSize, Prefetch: s.prefetch, Files: make([]fileStats, 0, len(files)),
	}
	models := map[*modelSource]*modelTotals{}
	if s.manifest {
		st.Models = make([]modelTotals, len(s.models))
		for i, m := range s.models {
			st.Models[i] = modelTotals{Name: m.spec.Name, Source: m.src.String()}
			models[m] = &st.Models[i]
		}
	}
	bs := s.blockSize
	for i, f := range files {
		o := objs[i]
		fst := fileStats{
			Path: f.path, Model: f.model.spec.Name, Size: f.obj.Size,
			CachedBytes: o.CachedBytes, CachedPercent: percent(o.CachedBytes, f.obj.Size),
			RAMBytes: o.MemBytes, DiskBytes: o.DiskBytes, FetchedBytes: o.FetchedBytes,
			Verify: o.Verify.String(),
		}
		if blocks := s.pf.plannedBlocks(f.path); len(blocks) > 0 {
			pp := &planProgress{}
			for _, b := range blocks {
				n := min(bs, f.obj.Size-b*bs)
				pp.PlannedBytes += n
				if o.Cached.Has(b) {
					pp.DoneBytes += n
				}
			}
			fst.Prefetch = pp
		}
		st.Files = append(st.Files, fst)
		st.Totals.add(fst)
		if m := models[f.model]; m != nil {
			m.add(fst)
		}
	}
	c := s.cache.Stats()
	st.Cache = cacheTotals{
		RAMBytes: c.MemBytes, RAMCapacity: c.MemCapacity, DiskBytes: c.DiskBytes, DiskCapacity: c.DiskCapacity,
		Hits: c.Hits, Misses: c.Misses, Evictions: c.Evictions,
		DiskHits: c.DiskHits, DiskMisses: c.DiskMisses, DiskEvictions: c.DiskEvictions, DiskCorrupt: c.DiskCorrupt,
		Loads: c.Loads, LoadErrors: c.LoadErrors, FetchedBytes: c.BytesLoaded,
		PrefetchBytes: c.PrefetchBytes, PrefetchUsedBytes: c.PrefetchUsed, PrefetchWastedBytes: c.PrefetchWasted,
		VerifiedFiles: c.VerifiedObjects, UnverifiedFiles: c.UnverifiedObjects, VerifyFailures: c.VerifyFailures,
	}
	if f := s.fuse.Load(); f != nil {
		st.FUSE = fuseTotals{Reads: f.Reads.Load(), ReadBytes: f.ReadBytes.Load(), ReadErrors: f.ReadErrors.Load()}
	}
	return st
}

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "show a running mount's cache state, per file and in total",
		ArgsUsage: "MOUNTPOINT",
		Description: `Reads the mount's hidden ` + fs.StatsName + ` file, a JSON snapshot taken
when it is opened, so it works wherever the mount is visible (a container
given the mount as a volume included). Per file: how much is cached (RAM
or disk), fetched from the source, and covered by the prefetch plan; then
the cache's totals. --json prints the snapshot itself.`,
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the JSON snapshot, for scripts"}},
		Action: runStats,
	}
}

func runStats(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("stats: want one argument, MOUNTPOINT (got %d)", c.NArg())
	}
	mp := c.Args().Get(0)
	raw, st, err := readStats(mp)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		_, err := os.Stdout.Write(raw)
		return err
	}
	return printStats(os.Stdout, st)
}

// readStats reads and decodes a mount's stats file.
func readStats(mp string) ([]byte, *mountStats, error) {
	notOurs := fmt.Errorf("stats: %s is not a modelfs mount (no %s at its root)", mp, fs.StatsName)
	st, err := os.Stat(mp)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return nil, nil, fmt.Errorf("stats: %s is a stale mount (transport endpoint is not connected)", mp)
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("stats: %s does not exist", mp)
	case err != nil:
		return nil, nil, fmt.Errorf("stats: %w", err)
	case !st.IsDir():
		return nil, nil, fmt.Errorf("stats: %s is not a directory", mp)
	}
	// Only a FUSE mount can be ours: a stray file of that name elsewhere
	// is not read.
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type != unix.FUSE_SUPER_MAGIC {
		return nil, nil, notOurs
	}
	f, err := os.Open(filepath.Join(mp, fs.StatsName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, notOurs
	} else if err != nil {
		return nil, nil, fmt.Errorf("stats: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, 256<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("stats: reading %s: %w", f.Name(), err)
	}
	var ms mountStats
	if err := json.Unmarshal(raw, &ms); err != nil || ms.Format != statsFormat {
		return nil, nil, notOurs
	}
	return raw, &ms, nil
}

// printStats writes the snapshot as a table, then the totals.
func printStats(out io.Writer, st *mountStats) error {
	fmt.Fprintf(out, "%s  up %s  block size %s  prefetch %s\n\n", st.Source,
		st.GeneratedAt.Sub(st.StartedAt).Round(time.Second), formatSize(st.BlockSize), st.Prefetch)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FILE\tSIZE\tCACHED\tRAM\tDISK\tFETCHED\tPREFETCH PLAN\tVERIFY")
	for _, f := range st.Files {
		fmt.Fprintf(w, "%s\t%s\t%.1f%%\t%s\t%s\t%s\t%s\t%s\n", f.Path, formatSize(f.Size), f.CachedPercent,
			formatSize(f.RAMBytes), formatSize(f.DiskBytes), formatSize(f.FetchedBytes), planText(f.Prefetch), f.Verify)
	}
	total := func(name string, t fileTotals) {
		fmt.Fprintf(w, "%s (%d files)\t%s\t%.1f%%\t\t\t%s\t%s\t\n", name, t.Files, formatSize(t.Size), t.CachedPercent,
			formatSize(t.FetchedBytes), planText(t.Prefetch))
	}
	for _, m := range st.Models {
		total("model "+m.Name, m.fileTotals)
	}
	total("TOTAL", st.Totals)
	if err := w.Flush(); err != nil {
		return err
	}
	c := st.Cache
	fmt.Fprintf(out, "\ncache  RAM %s of %s; disk %s of %s\n", formatSize(c.RAMBytes), formatSize(c.RAMCapacity),
		formatSize(c.DiskBytes), formatSize(c.DiskCapacity))
	fmt.Fprintf(out, "       RAM hits %d, misses %d, evictions %d; disk hits %d, misses %d, evictions %d, corrupt %d\n",
		c.Hits, c.Misses, c.Evictions, c.DiskHits, c.DiskMisses, c.DiskEvictions, c.DiskCorrupt)
	fmt.Fprintf(out, "       fetched %s in %d loads (%d failed); prefetched %s, used %s, wasted %s\n",
		formatSize(c.FetchedBytes), c.Loads, c.LoadErrors, formatSize(c.PrefetchBytes), formatSize(c.PrefetchUsedBytes), formatSize(c.PrefetchWastedBytes))
	fmt.Fprintf(out, "verify %d files verified against their store's checksum, %d unverified (no usable checksum), %d failed\n",
		c.VerifiedFiles, c.UnverifiedFiles, c.VerifyFailures)
	_, err := fmt.Fprintf(out, "fuse   %d reads, %s, %d errors (page cache and passthrough reads not counted)\n",
		st.FUSE.Reads, formatSize(st.FUSE.ReadBytes), st.FUSE.ReadErrors)
	return err
}

// planText is "done of planned", or "-" without a plan.
func planText(p *planProgress) string {
	if p == nil {
		return "-"
	}
	return formatSize(p.DoneBytes) + " of " + formatSize(p.PlannedBytes)
}
