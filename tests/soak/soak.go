package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	accessKey = "AKIAMODELFSSOAK00001"
	secretKey = "modelfs-soak-secret-key-loopback-only"
	region    = "us-east-1"
	bucket    = "models"
)

// Config is one soak run.
type Config struct {
	Modelfs, Mmapread string // binaries
	// Dir holds the models, the store, the disk cache, the mountpoints and
	// the mounts' logs. Empty: a temporary directory, removed at the end.
	Dir      string
	Duration time.Duration
	Sizes    []int64 // one model each
	// Readers is the number of concurrent readers; MmapReaders of them run
	// mmapread children, the rest do preads.
	Readers, MmapReaders int
	FaultRate            float64 // share of ranged GETs faulted
	// The mounts' flags. DiskCache 0 means a quarter of all the models.
	BlockSize, MemCache, DiskCache int64
	Concurrency, Retries           int
	RequestTimeout                 time.Duration
	MountFlags                     []string // more modelfs mount flags
	MaxRead                        int64    // largest pread
	// RSSBase is what a mount may hold beyond its block caches and FUSE
	// buffers: its code, the Go runtime, the AWS SDK and its own heap.
	RSSBase     int64
	Seed        uint64
	Progress    time.Duration // how often to print a progress line
	SampleEvery time.Duration // RSS sampling period
	Log         io.Writer     // progress and setup lines; nil: none
}

// DefaultConfig is the `make soak` run: three models of 320 MiB in all,
// which fits a 5 minute run on two cores.
func DefaultConfig() Config {
	return Config{
		Modelfs: "bin/modelfs", Mmapread: "bin/mmapread",
		Duration: 5 * time.Minute,
		Sizes:    []int64{32 << 20, 96 << 20, 192 << 20},
		Readers:  16, MmapReaders: 4,
		FaultRate: 0.05,
		// Small blocks: more GETs, so more faults and evictions per byte.
		BlockSize: 1 << 20, MemCache: 32 << 20,
		Concurrency: 16, Retries: 5, RequestTimeout: 2 * time.Second,
		MaxRead: 4 << 20, RSSBase: 48 << 20,
		Seed:     1,
		Progress: 30 * time.Second, SampleEvery: 200 * time.Millisecond,
	}
}

func (c Config) validate() error {
	switch {
	case c.Duration <= 0:
		return errors.New("-duration must be positive")
	case len(c.Sizes) == 0:
		return errors.New("-sizes: want at least one model")
	case c.Readers < 1 || c.MmapReaders < 0 || c.MmapReaders > c.Readers:
		return errors.New("want -readers >= 1 and 0 <= -mmap-readers <= -readers")
	case c.FaultRate < 0 || c.FaultRate > 0.5:
		return errors.New("-fault-rate: want 0 to 0.5")
	case c.Retries < 1 || c.Concurrency < 1 || c.RequestTimeout <= 0:
		return errors.New("want -retries and -concurrency >= 1 and a positive -request-timeout")
	case c.MemCache < 2*c.BlockSize:
		return errors.New("-mem-cache: want at least two blocks")
	case c.MaxRead < 1:
		return errors.New("-max-read must be positive")
	case c.Progress <= 0 || c.SampleEvery <= 0:
		return errors.New("-progress must be positive")
	}
	return nil
}

// FUSE request buffers live on the Go heap: go-fuse gives every request
// in flight an input buffer sized for the largest write and every read a
// reply buffer, both fuseMaxRead bytes (fs.Options.MaxRead's default,
// which modelfs also sets as MaxWrite). The kernel keeps at most
// fuseBackground readahead reads in flight (go-fuse's MaxBackground
// default), plus one read per thread blocked in a read or a page fault.
const (
	fuseMaxRead    = 1 << 20
	fuseBackground = 12
)

// rssBudget is the most RSS a mount may reach: its RAM cache; one block
// per concurrent load (a demand load may go over the cache budget by
// that); two FUSE buffers per read that can be in flight, twice over (the
// heap grows to twice what is live before the GC runs, at GOGC=100); and
// RSSBase. A mount may see every reader at once.
func (c Config) rssBudget() int64 {
	fuse := 2 * 2 * int64(fuseBackground+c.Readers) * fuseMaxRead
	return c.MemCache + int64(c.Concurrency)*c.BlockSize + fuse + c.RSSBase
}

// soakFile is one model file: its original on local disk and its path
// through the mount.
type soakFile struct {
	name    string // relative to the model
	size    int64
	sha256  string
	orig    *os.File
	mounted string
}

type soakModel struct {
	name       string
	mountDir   string
	files      []*soakFile // sorted by name
	total      int64
	shardSums  string // what mmapread -quiet prints for the model
	shardBytes int64
}

// Report is what a run did and found.
type Report struct {
	Config  Config
	Elapsed time.Duration
	Models  []string // "name (size)"

	Preads, PreadBytes, MmapRuns, MmapBytes int64
	WrongReads, EIO, OtherErrors            int64
	Problems                                []string // the first failures, in detail

	ObjectGets    int64            // ranged GET tries the server saw
	Faults        map[string]int64 // by kind
	FailingFaults int64            // faults that fail their try

	Total    mountMetrics            // all mounts
	PerMount map[string]mountMetrics // by model
	PeakRSS  map[string]int64        // VmHWM by model
	Budget   int64
	// ReadFailures are the reads the mounts logged as failed (EIO).
	ReadFailures int64

	Failures []string
}

// BytesVerified is every byte read and checked against the originals.
func (r *Report) BytesVerified() int64 { return r.PreadBytes + r.MmapBytes }

// FaultsInjected is the number of faults of every kind.
func (r *Report) FaultsInjected() int64 {
	var n int64
	for _, v := range r.Faults {
		n += v
	}
	return n
}

// Run does one soak run. An error means it could not be set up or run;
// problems the run found are in Report.Failures.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", args...)
		}
	}
	modelfsBin, err := absBinary(cfg.Modelfs)
	if err != nil {
		return nil, fmt.Errorf("-modelfs: %w", err)
	}
	mmapBin, err := absBinary(cfg.Mmapread)
	if err != nil {
		return nil, fmt.Errorf("-mmapread: %w", err)
	}
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "modelfs-soak-"); err != nil {
			return nil, err
		}
		// Registered first, so it runs after every mount is gone.
		defer os.RemoveAll(dir)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	// A kept -dir may hold an earlier run's store and cache: start afresh.
	for _, sub := range []string{"store", "cache"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return nil, err
		}
	}

	t0 := time.Now()
	models, err := generateModels(dir, cfg.Sizes, cfg.Seed)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range models {
			for _, f := range m.files {
				f.orig.Close()
			}
		}
	}()
	var total int64
	for _, m := range models {
		total += m.total
	}
	logf("soak: generated %d models, %s in all, in %v", len(models), mib(total), since(t0))

	srv, err := s3server.New(s3server.Options{Dir: filepath.Join(dir, "store"), AccessKey: accessKey, SecretKey: secretKey, Region: region})
	if err != nil {
		return nil, err
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	defer srv.Close()
	if err := upload(srv, models); err != nil {
		return nil, err
	}

	diskCache := cfg.DiskCache
	if diskCache == 0 {
		diskCache = max(total/4, 4*cfg.BlockSize)
	}
	args := []string{
		"--endpoint", srv.URL(), "--region", region,
		"--block-size", strconv.FormatInt(cfg.BlockSize, 10), "--mem-cache", strconv.FormatInt(cfg.MemCache, 10),
		"--cache-dir", filepath.Join(dir, "cache"), "--cache-size", strconv.FormatInt(diskCache, 10),
		"--concurrency", strconv.Itoa(cfg.Concurrency), "--retries", strconv.Itoa(cfg.Retries),
		"--request-timeout", cfg.RequestTimeout.String(), "--metrics-addr", "127.0.0.1:0",
	}
	args = append(args, cfg.MountFlags...)
	var mounts []*mountProc
	defer func() {
		for _, m := range mounts {
			m.abandon()
		}
	}()
	for _, m := range models {
		mp, err := startMount(ctx, modelfsBin, m.name, "s3://"+bucket+"/"+m.name, m.mountDir,
			filepath.Join(dir, m.name+".log"), args, mountEnv())
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, mp)
	}
	logf("soak: %d mounts (block %s, RAM cache %s each, one %s disk cache for all); logs in %s",
		len(mounts), fmtSize(cfg.BlockSize), fmtSize(cfg.MemCache), mib(diskCache), dir)

	rep := &Report{Config: cfg, PerMount: map[string]mountMetrics{}, PeakRSS: map[string]int64{}, Budget: cfg.rssBudget()}
	for _, m := range models {
		rep.Models = append(rep.Models, fmt.Sprintf("%s (%s)", m.name, mib(m.total)))
	}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		sampleRSS(mounts, cfg.SampleEvery, stopSampling)
	}()
	defer func() {
		// Only reached early on errors: stops the sampler if still running.
		select {
		case <-stopSampling:
		default:
			close(stopSampling)
		}
		<-sampled
	}()

	inj := newInjector(srv, cfg.FaultRate, cfg.RequestTimeout, cfg.Seed)
	srv.SetHook(inj.hook)
	defer srv.SetHook(nil)

	var t tally
	start := time.Now()
	readTally(ctx, cfg, models, mounts, mmapBin, inj, &t, logf)
	rep.Elapsed = time.Since(start)

	// Let the faults under way end, so every failed try has been retried
	// (or has failed for good) before the mounts' counters are read.
	stopCtx, cancel := context.WithTimeout(context.Background(), 3*cfg.RequestTimeout+30*time.Second)
	err = inj.stop(stopCtx)
	cancel()
	srv.SetHook(nil)
	if err != nil {
		rep.Failures = append(rep.Failures, err.Error())
	}
	faults := inj.snapshot()
	rep.Faults, rep.ObjectGets = faults.byKind, faults.seen
	for kind, n := range faults.byKind {
		if failsTry(kind) {
			rep.FailingFaults += n
		}
	}
	rep.collectMetrics(mounts)

	close(stopSampling)
	<-sampled
	for _, m := range mounts {
		if m.Alive() {
			m.rss.sample(m.Pid()) // VmHWM covers the whole run
		}
		_, hwm, _ := m.rss.peak()
		rep.PeakRSS[m.name] = hwm
	}
	for _, m := range mounts {
		if err := m.stop(); err != nil {
			rep.Failures = append(rep.Failures, err.Error())
		}
		rep.ReadFailures += m.readFailures.Load()
	}

	rep.Preads, rep.PreadBytes = t.preads.Load(), t.preadBytes.Load()
	rep.MmapRuns, rep.MmapBytes = t.mmapRuns.Load(), t.mmapBytes.Load()
	rep.WrongReads, rep.EIO, rep.OtherErrors = t.wrong.Load(), t.eio.Load(), t.otherErrs.Load()
	rep.Problems = t.problems
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted after %v", since(start))
	}
	rep.judge()
	return rep, nil
}

// readTally runs the readers until the duration is over and prints
// progress meanwhile.
func readTally(ctx context.Context, cfg Config, models []*soakModel, mounts []*mountProc, mmapBin string, inj *injector, t *tally, logf func(string, ...any)) {
	var files []*soakFile
	var totalBytes int64
	for _, m := range models {
		files = append(files, m.files...)
		totalBytes += m.total
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Readers {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1))
		wg.Add(1)
		if i < cfg.MmapReaders {
			go func() {
				defer wg.Done()
				mmapReader(ctx, deadline, rng, mmapBin, models, t)
			}()
			continue
		}
		go func() {
			defer wg.Done()
			preadReader(ctx, deadline, rng, files, totalBytes, cfg.MaxRead, t)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(cfg.Progress)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			f := inj.snapshot()
			var n int64
			for _, v := range f.byKind {
				n += v
			}
			var rss []string
			for _, m := range mounts {
				rss = append(rss, strconv.FormatInt(m.rss.current()>>20, 10))
			}
			logf("soak: %8v  preads %d  mmap runs %d  verified %s  faults %d  wrong %d  EIO %d  other errors %d  RSS %s MiB",
				since(start), t.preads.Load(), t.mmapRuns.Load(), mib(t.verified()), n, t.wrong.Load(), t.eio.Load(), t.otherErrs.Load(), strings.Join(rss, "/"))
		}
	}
}

// collectMetrics scrapes every mount. Retries are counted by the client
// just after a failed try ends, so it waits (bounded) for the count to
// cover the failed tries the server saw end.
func (r *Report) collectMetrics(mounts []*mountProc) {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var total mountMetrics
		per := map[string]mountMetrics{}
		var errs []string
		for _, m := range mounts {
			mm, err := scrapeMount(context.Background(), m.metrics)
			if err != nil {
				errs = append(errs, fmt.Sprintf("mount of %s: %v", m.name, err))
				continue
			}
			per[m.name] = mm
			total.add(mm)
		}
		r.Total, r.PerMount = total, per
		if len(errs) == 0 && total.Retries >= r.FailingFaults {
			return
		}
		if time.Now().After(deadline) {
			r.Failures = append(r.Failures, errs...)
			return
		}
		<-tick.C
	}
}

// judge lists what makes the run a failure.
func (r *Report) judge() {
	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if r.WrongReads > 0 {
		fail("%d reads returned wrong bytes", r.WrongReads)
	}
	if r.EIO > 0 {
		fail("%d reads failed with EIO: with %d tries per GET and %.0f%% faults, none should", r.EIO, r.Config.Retries, 100*r.Config.FaultRate)
	}
	if r.OtherErrors > 0 {
		fail("%d reads failed with other errors", r.OtherErrors)
	}
	if r.ReadFailures > 0 {
		fail("the mounts logged %d failed reads (EIO)", r.ReadFailures)
	}
	if r.BytesVerified() == 0 {
		fail("no bytes were read")
	}
	if r.Config.FaultRate > 0 && r.FaultsInjected() == 0 {
		fail("no faults were injected")
	}
	if r.Total.Retries < r.FailingFaults {
		fail("%d retries, fewer than the %d tries the faults failed", r.Total.Retries, r.FailingFaults)
	}
	if r.Total.RAMEvictions == 0 || r.Total.DiskEvictions == 0 {
		fail("the caches did not evict (RAM %d, disk %d): the working set fit", r.Total.RAMEvictions, r.Total.DiskEvictions)
	}
	for name, hwm := range r.PeakRSS {
		if hwm == 0 {
			fail("mount of %s: RSS never sampled", name)
		} else if hwm > r.Budget {
			fail("mount of %s: peak RSS %s over the %s budget", name, mib(hwm), mib(r.Budget))
		}
	}
}

// Print writes the report.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "\nsoak: %d models: %s\n", len(r.Models), strings.Join(r.Models, ", "))
	fmt.Fprintf(w, "  %d readers (%d mmap), %v, %.1f%% faults, --retries %d --request-timeout %v, block %s, RAM cache %s per mount\n",
		c.Readers, c.MmapReaders, r.Elapsed.Round(time.Second), 100*c.FaultRate, c.Retries, c.RequestTimeout, fmtSize(c.BlockSize), fmtSize(c.MemCache))
	row := func(name, format string, args ...any) {
		fmt.Fprintf(w, "  %-18s "+format+"\n", append([]any{name}, args...)...)
	}
	row("reads", "%d preads, %d mmap runs (whole models)", r.Preads, r.MmapRuns)
	row("bytes verified", "%.2f GiB (preads %.2f GiB, mmap %.2f GiB), %.1f MiB/s",
		gib(r.BytesVerified()), gib(r.PreadBytes), gib(r.MmapBytes), float64(r.BytesVerified())/(1<<20)/max(r.Elapsed.Seconds(), 1e-9))
	row("wrong bytes", "%d reads", r.WrongReads)
	row("EIO", "%d", r.EIO)
	row("other errors", "%d", r.OtherErrors)
	var kinds []string
	for _, k := range faultNames() {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, r.Faults[k]))
	}
	pct := 0.0
	if r.ObjectGets > 0 {
		pct = 100 * float64(r.FaultsInjected()) / float64(r.ObjectGets)
	}
	row("faults injected", "%d of %d GET tries (%.1f%%): %s", r.FaultsInjected(), r.ObjectGets, pct, strings.Join(kinds, ", "))
	row("retries", "%d (tries failed by faults: %d)", r.Total.Retries, r.FailingFaults)
	row("GET requests", "%d (modelfs, retries not counted); failed for good: %d", r.Total.Gets, r.Total.FetchErrors)
	row("FUSE reads", "%d; EIO (logged): %d; interrupted: %d; block loads failed: %d",
		r.Total.FuseReads, r.ReadFailures, r.Total.FuseReadErrors-r.ReadFailures, r.Total.LoadErrors)
	row("evictions", "RAM %d, disk %d", r.Total.RAMEvictions, r.Total.DiskEvictions)
	row("disk cache", "hits %d, blocks failing verification %d", r.Total.DiskHits, r.Total.DiskCorrupt)
	names := make([]string, 0, len(r.PeakRSS))
	for n := range r.PeakRSS {
		names = append(names, n)
	}
	sort.Strings(names)
	var peaks []string
	for _, n := range names {
		peaks = append(peaks, fmt.Sprintf("%s %s", n, mib(r.PeakRSS[n])))
	}
	row("peak RSS (VmHWM)", "%s; budget %s each", strings.Join(peaks, ", "), mib(r.Budget))
	for _, n := range names {
		m := r.PerMount[n]
		row("  "+n, "GETs %d, retries %d, FUSE reads %d, evictions RAM %d disk %d, prefetches %d, Go heap in use %s, Go sys %s",
			m.Gets, m.Retries, m.FuseReads, m.RAMEvictions, m.DiskEvictions, m.Prefetches, mib(m.HeapInuse), mib(m.GoSys))
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  FAIL: %s\n", f)
	}
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// generateModels writes one model per size under dir/models, with its
// sha256s, to be mounted under dir/mnt.
func generateModels(dir string, sizes []int64, seed uint64) ([]*soakModel, error) {
	var models []*soakModel
	for i, size := range sizes {
		name := fmt.Sprintf("model-%c", 'a'+i)
		mdir := filepath.Join(dir, "models", name)
		// More shards for bigger models, as checkpoints have.
		shards := min(i+1, max(1, int(size>>25)))
		gm, err := modelgen.Generate(mdir, modelgen.Options{TotalBytes: size, Shards: shards, Seed: int64(seed)*100 + int64(i)})
		if err != nil {
			return nil, fmt.Errorf("generating %s: %w", name, err)
		}
		m := &soakModel{name: name, mountDir: filepath.Join(dir, "mnt", name)}
		for _, f := range gm.Files { // sorted
			sf, err := openOriginal(filepath.Join(mdir, f))
			if err != nil {
				return nil, err
			}
			sf.name, sf.mounted = f, filepath.Join(m.mountDir, f)
			m.files = append(m.files, sf)
			m.total += sf.size
		}
		if m.shardSums, m.shardBytes, err = shardSums(m.files); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		models = append(models, m)
	}
	return models, nil
}

// openOriginal opens a generated file, kept open for the run, and hashes it.
func openOriginal(path string) (*soakFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hashing %s: %w", path, err)
	}
	return &soakFile{size: n, sha256: hex.EncodeToString(h.Sum(nil)), orig: f}, nil
}

// upload puts every model under its name in the bucket.
func upload(srv *s3server.Server, models []*soakModel) error {
	if err := srv.CreateBucket(bucket); err != nil {
		return err
	}
	for _, m := range models {
		for _, f := range m.files {
			if _, err := srv.PutObjectFromFile(bucket, m.name+"/"+f.name, f.orig.Name()); err != nil {
				return fmt.Errorf("uploading %s/%s: %w", m.name, f.name, err)
			}
		}
	}
	return nil
}
