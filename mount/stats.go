package mount

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fs"
)

// StatsFormat marks the stats file's JSON, and versions it.
const StatsFormat = "modelfs-stats/1"

// Snapshot is the content of a mount's stats file (fs.StatsName).
type Snapshot struct {
	Format      string      `json:"format"`
	Source      string      `json:"source"`
	StartedAt   time.Time   `json:"started_at"`
	GeneratedAt time.Time   `json:"generated_at"`
	BlockSize   int64       `json:"block_size"`
	Prefetch    string      `json:"prefetch"`
	Files       []FileStats `json:"files"`
	// Models has one entry per manifest model; none for a single SOURCE.
	Models []ModelTotals `json:"models,omitempty"`
	Totals FileTotals    `json:"totals"`
	Cache  CacheTotals   `json:"cache"`
	FUSE   FUSETotals    `json:"fuse"`
}

// FileStats is one file of the mount.
type FileStats struct {
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
	Prefetch     *PlanProgress `json:"prefetch,omitempty"`
	// Verify is the file against its store's checksum: pending (not
	// every block loaded yet), verified, unverified (the store keeps no
	// usable checksum) or failed (reads fail with EIO).
	Verify string `json:"verify"`
}

// PlanProgress is the prefetch plan's share of a file: the bytes of the
// blocks it covers, and how many of those are cached.
type PlanProgress struct {
	PlannedBytes int64 `json:"planned_bytes"`
	DoneBytes    int64 `json:"done_bytes"`
}

// FileTotals adds up files.
type FileTotals struct {
	Files         int           `json:"files"`
	Size          int64         `json:"size"`
	CachedBytes   int64         `json:"cached_bytes"`
	CachedPercent float64       `json:"cached_percent"`
	FetchedBytes  int64         `json:"fetched_bytes"`
	Prefetch      *PlanProgress `json:"prefetch,omitempty"`
}

func (t *FileTotals) add(f FileStats) {
	t.Files++
	t.Size += f.Size
	t.CachedBytes += f.CachedBytes
	t.CachedPercent = percent(t.CachedBytes, t.Size)
	t.FetchedBytes += f.FetchedBytes
	if f.Prefetch != nil {
		if t.Prefetch == nil {
			t.Prefetch = &PlanProgress{}
		}
		t.Prefetch.PlannedBytes += f.Prefetch.PlannedBytes
		t.Prefetch.DoneBytes += f.Prefetch.DoneBytes
	}
}

type ModelTotals struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	FileTotals
}

// CacheTotals are the block cache's counters (blockcache.Stats).
type CacheTotals struct {
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

// FUSETotals count the reads modelfs served itself.
type FUSETotals struct {
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

func (s *statsReporter) collect(now time.Time) *Snapshot {
	files := s.files()
	ids := make([]blockcache.ObjectID, len(files))
	for i, f := range files {
		ids[i] = f.cacheID()
	}
	objs := s.cache.ObjectStats(ids)
	st := &Snapshot{
		Format: StatsFormat, Source: s.source, StartedAt: s.started, GeneratedAt: now,
		BlockSize: s.blockSize, Prefetch: s.prefetch, Files: make([]FileStats, 0, len(files)),
	}
	models := map[*modelSource]*ModelTotals{}
	if s.manifest {
		st.Models = make([]ModelTotals, len(s.models))
		for i, m := range s.models {
			st.Models[i] = ModelTotals{Name: m.spec.Name, Source: m.src.String()}
			models[m] = &st.Models[i]
		}
	}
	bs := s.blockSize
	for i, f := range files {
		o := objs[i]
		fst := FileStats{
			Path: f.path, Model: f.model.spec.Name, Size: f.obj.Size,
			CachedBytes: o.CachedBytes, CachedPercent: percent(o.CachedBytes, f.obj.Size),
			RAMBytes: o.MemBytes, DiskBytes: o.DiskBytes, FetchedBytes: o.FetchedBytes,
			Verify: o.Verify.String(),
		}
		if blocks := s.pf.plannedBlocks(f.path); len(blocks) > 0 {
			pp := &PlanProgress{}
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
	st.Cache = CacheTotals{
		RAMBytes: c.MemBytes, RAMCapacity: c.MemCapacity, DiskBytes: c.DiskBytes, DiskCapacity: c.DiskCapacity,
		Hits: c.Hits, Misses: c.Misses, Evictions: c.Evictions,
		DiskHits: c.DiskHits, DiskMisses: c.DiskMisses, DiskEvictions: c.DiskEvictions, DiskCorrupt: c.DiskCorrupt,
		Loads: c.Loads, LoadErrors: c.LoadErrors, FetchedBytes: c.BytesLoaded,
		PrefetchBytes: c.PrefetchBytes, PrefetchUsedBytes: c.PrefetchUsed, PrefetchWastedBytes: c.PrefetchWasted,
		VerifiedFiles: c.VerifiedObjects, UnverifiedFiles: c.UnverifiedObjects, VerifyFailures: c.VerifyFailures,
	}
	if f := s.fuse.Load(); f != nil {
		st.FUSE = FUSETotals{Reads: f.Reads.Load(), ReadBytes: f.ReadBytes.Load(), ReadErrors: f.ReadErrors.Load()}
	}
	return st
}
