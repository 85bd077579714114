package mount

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/sharedtier"
)

// StatsFormat marks the stats file's JSON, and versions it.
const StatsFormat = "modelfs-stats/1"

// Snapshot is the content of a mount's stats file (fs.StatsName).
type Snapshot struct {
	Format      string    `json:"format"`
	Source      string    `json:"source"`
	StartedAt   time.Time `json:"started_at"`
	GeneratedAt time.Time `json:"generated_at"`
	BlockSize   int64     `json:"block_size"`
	Prefetch    string    `json:"prefetch"`
	// SharedCache is the --shared-cache location; "" without one.
	SharedCache string      `json:"shared_cache,omitempty"`
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

// CacheTotals are the block cache's counters and gauges. Their JSON names
// are also the keys of the unmount log line, and each is a Prometheus
// metric (cacheCounters says which).
type CacheTotals struct {
	RAMBytes            int64 `json:"ram_bytes"`
	RAMCapacity         int64 `json:"ram_capacity_bytes"`
	DiskBytes           int64 `json:"disk_bytes"`
	DiskCapacity        int64 `json:"disk_capacity_bytes"`
	Hits                int64 `json:"hits"`
	Misses              int64 `json:"misses"`
	Evictions           int64 `json:"evictions"`
	DiskHits            int64 `json:"disk_hits"`
	DiskPageCacheHits   int64 `json:"disk_page_cache_hits"`
	DiskMisses          int64 `json:"disk_misses"`
	DiskEvictions       int64 `json:"disk_evictions"`
	DiskCorrupt         int64 `json:"disk_corrupt"`
	DiskWrites          int64 `json:"disk_writes"`
	DemandLoads         int64 `json:"demand_loads"`
	Loads               int64 `json:"loads"`
	LoadErrors          int64 `json:"load_errors"`
	FetchedBytes        int64 `json:"fetched_bytes"`
	Prefetches          int64 `json:"prefetches"`
	PrefetchesDropped   int64 `json:"prefetches_dropped"`
	PrefetchBytes       int64 `json:"prefetch_bytes"`
	PrefetchUsedBytes   int64 `json:"prefetch_used_bytes"`
	PrefetchUnusedBytes int64 `json:"prefetch_unused_bytes"`
	PrefetchAheadBytes  int64 `json:"prefetch_ahead_bytes"`
	FreshBuffers        int64 `json:"fresh_buffers"`
	ReusedBuffers       int64 `json:"reused_buffers"`
	VerifiedFiles       int64 `json:"verified_files"`
	UnverifiedFiles     int64 `json:"unverified_files"`
	VerifyFailures      int64 `json:"verify_failures"`
	// The shared tier's (--shared-cache); all zero without one. Its hits
	// count in fetched_bytes too: the origin sent fetched_bytes minus
	// shared_hit_bytes.
	SharedHits           int64 `json:"shared_hits"`
	SharedHitBytes       int64 `json:"shared_hit_bytes"`
	SharedMisses         int64 `json:"shared_misses"`
	SharedDamaged        int64 `json:"shared_damaged"`
	SharedErrors         int64 `json:"shared_errors"`
	SharedBypassed       int64 `json:"shared_bypassed"`
	SharedWrites         int64 `json:"shared_writes"`
	SharedWriteBytes     int64 `json:"shared_write_bytes"`
	SharedWriteDrops     int64 `json:"shared_write_drops"`
	SharedWriteErrors    int64 `json:"shared_write_errors"`
	SharedClaimsWon      int64 `json:"shared_claims_won"`
	SharedClaimsLost     int64 `json:"shared_claims_lost"`
	SharedClaimTimeouts  int64 `json:"shared_claim_timeouts"`
	SharedClaimsStale    int64 `json:"shared_claims_stale"`
	SharedClaimRefreshes int64 `json:"shared_claim_refreshes"`
	SharedPurges         int64 `json:"shared_purges"`
	SharedPurgedBlocks   int64 `json:"shared_purged_blocks"`
}

// addShared adds the shared tier's counters.
func (t *CacheTotals) addShared(s sharedtier.Stats) {
	t.SharedHits, t.SharedHitBytes, t.SharedMisses, t.SharedDamaged = s.Hits, s.HitBytes, s.Misses, s.Damaged
	t.SharedErrors, t.SharedBypassed = s.Errors, s.Bypassed
	t.SharedWrites, t.SharedWriteBytes, t.SharedWriteDrops, t.SharedWriteErrors = s.Writes, s.WriteBytes, s.WriteDrops, s.WriteErrors
	t.SharedClaimsWon, t.SharedClaimsLost, t.SharedClaimTimeouts, t.SharedClaimsStale = s.ClaimsWon, s.ClaimsLost, s.ClaimTimeouts, s.ClaimsStale
	t.SharedClaimRefreshes, t.SharedPurges, t.SharedPurgedBlocks = s.ClaimRefreshes, s.Purges, s.PurgedBlocks
}

// cacheTotals names the cache's counters as the snapshot does.
func cacheTotals(c blockcache.Stats) CacheTotals {
	return CacheTotals{
		RAMBytes: c.MemBytes, RAMCapacity: c.MemCapacity, DiskBytes: c.DiskBytes, DiskCapacity: c.DiskCapacity,
		Hits: c.Hits, Misses: c.Misses, Evictions: c.Evictions,
		DiskHits: c.DiskHits, DiskPageCacheHits: c.DiskPageCacheHits, DiskMisses: c.DiskMisses, DiskEvictions: c.DiskEvictions, DiskCorrupt: c.DiskCorrupt, DiskWrites: c.DiskWrites,
		DemandLoads: c.DemandLoads, Loads: c.Loads, LoadErrors: c.LoadErrors, FetchedBytes: c.BytesLoaded,
		Prefetches: c.Prefetches, PrefetchesDropped: c.PrefetchesDropped,
		PrefetchBytes: c.PrefetchBytes, PrefetchUsedBytes: c.PrefetchUsed, PrefetchUnusedBytes: c.PrefetchWasted,
		PrefetchAheadBytes: c.PrefetchAhead, FreshBuffers: c.FreshBuffers, ReusedBuffers: c.ReusedBuffers,
		VerifiedFiles: c.VerifiedObjects, UnverifiedFiles: c.UnverifiedObjects, VerifyFailures: c.VerifyFailures,
	}
}

// counter is one field of CacheTotals as the log line and Prometheus show
// it: name is its JSON name and log key, metric its Prometheus name.
type counter struct {
	name, metric, help string
	gauge              bool
	value              func(*CacheTotals) int64
}

// cacheCounters are CacheTotals' fields, in the log line's order. The
// Prometheus names predate the snapshot and stay as dashboards know them.
var cacheCounters = []counter{
	{"hits", "modelfs_cache_hits_total", "Demand block lookups found in RAM.", false, func(s *CacheTotals) int64 { return s.Hits }},
	{"misses", "modelfs_cache_misses_total", "Demand block lookups not found in RAM.", false, func(s *CacheTotals) int64 { return s.Misses }},
	{"demand_loads", "modelfs_cache_demand_loads_total", "Loads a reader waited for from their start: what prefetch missed.", false, func(s *CacheTotals) int64 { return s.DemandLoads }},
	{"loads", "modelfs_cache_loads_total", "Block loads from the source (demand and prefetch).", false, func(s *CacheTotals) int64 { return s.Loads }},
	{"load_errors", "modelfs_cache_load_errors_total", "Block loads that failed.", false, func(s *CacheTotals) int64 { return s.LoadErrors }},
	{"fetched_bytes", "modelfs_cache_fetched_bytes_total", "Bytes fetched from the source into the cache (not from the disk tier).", false, func(s *CacheTotals) int64 { return s.FetchedBytes }},
	{"evictions", "modelfs_cache_evictions_total", "Blocks evicted from RAM.", false, func(s *CacheTotals) int64 { return s.Evictions }},
	{"prefetches", "modelfs_cache_prefetches_total", "Prefetch loads started.", false, func(s *CacheTotals) int64 { return s.Prefetches }},
	{"prefetch_bytes", "modelfs_cache_prefetch_bytes_total", "Bytes prefetch loads brought in.", false, func(s *CacheTotals) int64 { return s.PrefetchBytes }},
	{"prefetch_used_bytes", "modelfs_cache_prefetch_used_bytes_total", "Bytes prefetched, then read.", false, func(s *CacheTotals) int64 { return s.PrefetchUsedBytes }},
	{"prefetch_unused_bytes", "modelfs_cache_prefetch_unused_bytes_total", "Bytes prefetched, then evicted or left at close unread.", false, func(s *CacheTotals) int64 { return s.PrefetchUnusedBytes }},
	{"prefetches_dropped", "modelfs_cache_prefetches_dropped_total", "Prefetches refused for want of room.", false, func(s *CacheTotals) int64 { return s.PrefetchesDropped }},
	{"prefetch_ahead_bytes", "modelfs_cache_prefetch_ahead_bytes", "How far prefetch may run ahead of readers (bytes loading or loaded and not read yet); it grows when a reader catches up.", true, func(s *CacheTotals) int64 { return s.PrefetchAheadBytes }},
	{"fresh_buffers", "modelfs_cache_fresh_buffers_total", "Block buffers mapped fresh (first-touched memory).", false, func(s *CacheTotals) int64 { return s.FreshBuffers }},
	{"reused_buffers", "modelfs_cache_reused_buffers_total", "Block loads that landed in a recycled buffer.", false, func(s *CacheTotals) int64 { return s.ReusedBuffers }},
	{"ram_bytes", "modelfs_cache_ram_bytes", "Bytes of RAM the cache holds.", true, func(s *CacheTotals) int64 { return s.RAMBytes }},
	{"ram_capacity_bytes", "modelfs_cache_ram_capacity_bytes", "RAM cache budget.", true, func(s *CacheTotals) int64 { return s.RAMCapacity }},
	{"disk_hits", "modelfs_cache_disk_hits_total", "Blocks read from the disk cache.", false, func(s *CacheTotals) int64 { return s.DiskHits }},
	{"disk_page_cache_hits", "modelfs_cache_disk_page_cache_hits_total", "Disk cache hits read from the page cache rather than the disk.", false, func(s *CacheTotals) int64 { return s.DiskPageCacheHits }},
	{"disk_misses", "modelfs_cache_disk_misses_total", "Blocks looked for in the disk cache and not found.", false, func(s *CacheTotals) int64 { return s.DiskMisses }},
	{"disk_corrupt", "modelfs_cache_disk_corrupt_total", "Disk cache blocks that failed their checksum.", false, func(s *CacheTotals) int64 { return s.DiskCorrupt }},
	{"disk_writes", "modelfs_cache_disk_writes_total", "Blocks written to the disk cache.", false, func(s *CacheTotals) int64 { return s.DiskWrites }},
	{"disk_evictions", "modelfs_cache_disk_evictions_total", "Blocks evicted from the disk cache.", false, func(s *CacheTotals) int64 { return s.DiskEvictions }},
	{"disk_bytes", "modelfs_cache_disk_bytes", "Bytes the disk cache holds.", true, func(s *CacheTotals) int64 { return s.DiskBytes }},
	{"disk_capacity_bytes", "modelfs_cache_disk_capacity_bytes", "Disk cache budget (0 without a disk cache).", true, func(s *CacheTotals) int64 { return s.DiskCapacity }},
	{"verified_files", "modelfs_verify_verified_files_total", "Files whose bytes matched their store's checksum once complete.", false, func(s *CacheTotals) int64 { return s.VerifiedFiles }},
	{"unverified_files", "modelfs_verify_unverified_files_total", "Files whose store keeps no usable checksum.", false, func(s *CacheTotals) int64 { return s.UnverifiedFiles }},
	{"verify_failures", "modelfs_verify_failures_total", "Files whose bytes did not match their store's checksum (reads fail with EIO).", false, func(s *CacheTotals) int64 { return s.VerifyFailures }},
	{"shared_hits", "modelfs_shared_hits_total", "Blocks read from the shared cache.", false, func(s *CacheTotals) int64 { return s.SharedHits }},
	{"shared_hit_bytes", "modelfs_shared_hit_bytes_total", "Bytes of the blocks read from the shared cache.", false, func(s *CacheTotals) int64 { return s.SharedHitBytes }},
	{"shared_misses", "modelfs_shared_misses_total", "Blocks the shared cache did not have, or had damaged.", false, func(s *CacheTotals) int64 { return s.SharedMisses }},
	{"shared_damaged", "modelfs_shared_damaged_total", "Shared cache blocks damaged, truncated or written for another block (overwritten).", false, func(s *CacheTotals) int64 { return s.SharedDamaged }},
	{"shared_errors", "modelfs_shared_errors_total", "Failed requests to the shared cache (timeouts, refusals, server errors); the reads went to the origin.", false, func(s *CacheTotals) int64 { return s.SharedErrors }},
	{"shared_bypassed", "modelfs_shared_bypassed_total", "Blocks read from the origin without asking the shared cache, left alone after a failure.", false, func(s *CacheTotals) int64 { return s.SharedBypassed }},
	{"shared_writes", "modelfs_shared_writes_total", "Blocks written to the shared cache.", false, func(s *CacheTotals) int64 { return s.SharedWrites }},
	{"shared_write_bytes", "modelfs_shared_write_bytes_total", "Bytes of the blocks written to the shared cache.", false, func(s *CacheTotals) int64 { return s.SharedWriteBytes }},
	{"shared_write_drops", "modelfs_shared_write_drops_total", "Writes to the shared cache dropped because its queue was full.", false, func(s *CacheTotals) int64 { return s.SharedWriteDrops }},
	{"shared_write_errors", "modelfs_shared_write_errors_total", "Writes to the shared cache that failed.", false, func(s *CacheTotals) int64 { return s.SharedWriteErrors }},
	{"shared_claims_won", "modelfs_shared_claims_won_total", "Blocks this node fetched from the origin for the cluster.", false, func(s *CacheTotals) int64 { return s.SharedClaimsWon }},
	{"shared_claims_lost", "modelfs_shared_claims_lost_total", "Blocks another node was fetching when this one missed them.", false, func(s *CacheTotals) int64 { return s.SharedClaimsLost }},
	{"shared_claim_timeouts", "modelfs_shared_claim_timeouts_total", "Lost claims whose block did not come in time (read from the origin).", false, func(s *CacheTotals) int64 { return s.SharedClaimTimeouts }},
	{"shared_claims_stale", "modelfs_shared_claims_stale_total", "Claims of dead nodes taken over.", false, func(s *CacheTotals) int64 { return s.SharedClaimsStale }},
	{"shared_claim_refreshes", "modelfs_shared_claim_refreshes_total", "Rewrites of claims this node held while it fetched, keeping their waiters waiting.", false, func(s *CacheTotals) int64 { return s.SharedClaimRefreshes }},
	{"shared_purges", "modelfs_shared_purges_total", "Objects that failed their check whose shared blocks were deleted.", false, func(s *CacheTotals) int64 { return s.SharedPurges }},
	{"shared_purged_blocks", "modelfs_shared_purged_blocks_total", "Shared blocks deleted because their object failed its check.", false, func(s *CacheTotals) int64 { return s.SharedPurgedBlocks }},
}

// FUSETotals count the reads modelfs served itself, and the opens handed
// a cache file for the kernel to read directly. In the log line and in
// Prometheus their names start with fuse_ and passthrough_.
type FUSETotals struct {
	Reads            int64 `json:"reads"`
	ReadBytes        int64 `json:"read_bytes"`
	ReadErrors       int64 `json:"read_errors"`
	PassthroughOpens int64 `json:"passthrough_opens"`
}

func fuseTotals(f *fs.Stats) FUSETotals {
	return FUSETotals{Reads: f.Reads.Load(), ReadBytes: f.ReadBytes.Load(), ReadErrors: f.ReadErrors.Load(),
		PassthroughOpens: f.PassthroughOpens.Load()}
}

// logAttrs are the totals as the unmount log line's key-value pairs.
func logAttrs(c CacheTotals, f FUSETotals) []any {
	attrs := []any{"fuse_reads", f.Reads, "fuse_read_bytes", f.ReadBytes, "fuse_read_errors", f.ReadErrors,
		"passthrough_opens", f.PassthroughOpens}
	for _, k := range cacheCounters {
		attrs = append(attrs, k.name, k.value(&c))
	}
	return attrs
}

// statsReporter makes a mount's stats snapshots.
type statsReporter struct {
	source    string
	prefetch  string
	started   time.Time
	blockSize int64
	cache     *blockcache.Cache
	r         *remote
	pf        *prefetcher
	manifest  bool
	models    []*modelSource
	shown     atomic.Pointer[[]remoteFile] // the files in the mount
	fuse      atomic.Pointer[fs.Stats]
}

func newStatsReporter(r *remote, pf *prefetcher, mode string, blockSize int64) *statsReporter {
	s := &statsReporter{source: r.String(), prefetch: mode, started: time.Now(), blockSize: blockSize,
		cache: r.cache, r: r, pf: pf, manifest: r.manifest != "", models: r.models}
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
		SharedCache: s.r.sharedCache,
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
	st.Cache = s.r.totals()
	if f := s.fuse.Load(); f != nil {
		st.FUSE = fuseTotals(f)
	}
	return st
}
