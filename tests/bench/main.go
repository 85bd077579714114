package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/tests/linkproxy"
	"github.com/modelfs/modelfs/tests/mountproc"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	accessKey = "AKIABENCH00000000000"
	secretKey = "modelfs-bench-secret-key-loopback-only"
	region    = "us-east-1"
	bucket    = "models"
	prefix    = "bench/"
)

// config is the parsed command line.
type config struct {
	modelfs    string
	size       int64
	runs       int
	scenarios  []string
	baselines  []string
	cacheDir   string
	jsonPath   string
	rateGbit   float64
	rttMs      float64
	connMbit   float64
	link       string
	tls        bool
	peers      []string
	mountFlags []string
	warm       bool
	remount    bool
	verify     bool
	settle     time.Duration
	holdFreed  time.Duration
}

var (
	allScenarios = []string{"seq", "seq-2g", "mmap-header", "load", "mmap-random", "concurrent-4", "ttft", "pack-seq", "pack-mmap-header"}
	// defaultScenarios leaves out the pack-* ones, which need a pack of
	// the model first.
	defaultScenarios = allScenarios[:7]
	allBaselines     = []string{"raw-get", "download-then-read", "local-read", "local-modelfs"}
	allLinks         = []string{"loopback", "s3"}
)

// caEnv are the variables through which clients take a CA bundle.
var caEnv = []string{"SSL_CERT_FILE", "SSL_CERT_DIR", "AWS_CA_BUNDLE", "CURL_CA_BUNDLE"}

// The s3 link profile: what a client in the store's region sees of S3.
// One TCP flow gets about 100 MB/s whatever the link, the instance's link
// is a few Gbit/s, and a request's first byte is tens of ms away.
const (
	s3LinkGbit     = 5
	s3LinkConnMbit = 800 // 100 MB/s
	s3LinkRTTMs    = 20
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == remoteChildArg {
		if err := runRemoteChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench: S3 server process:", err)
			os.Exit(1)
		}
		return
	}
	cfg, flags, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = run(ctx, cfg, flags)
	stop()
	// Whatever happened, no mount outlives the bench.
	stopAllMounts()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, map[string]string, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var c config
	var size, scen, base, mflags, peers string
	fs.StringVar(&c.modelfs, "modelfs", "bin/modelfs", "the modelfs binary to measure")
	fs.StringVar(&size, "size", "2GiB", "model size (7/8 sharded safetensors, 1/8 GGUF)")
	fs.IntVar(&c.runs, "runs", 3, "runs of every scenario and baseline; the table shows the median, min and max")
	fs.StringVar(&scen, "scenarios", strings.Join(defaultScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ", ")+" (pack-*: through a mount of the model as modelfs pack stores it)")
	fs.StringVar(&base, "baselines", strings.Join(allBaselines, ","), "comma-separated baselines to run: "+strings.Join(allBaselines, ", ")+` (raw-get also measures the largest object when seq-2g runs; "" for none)`)
	fs.StringVar(&c.cacheDir, "cache-dir", ".bench", "where the generated model, the server's objects, the download and the mountpoint live")
	fs.StringVar(&c.jsonPath, "json", "bench-results.json", "where to write the results as JSON")
	fs.Float64Var(&c.rateGbit, "rate-gbit", 0, "emulated link rate in Gbit/s per direction, shared by all connections (0: no limit)")
	fs.Float64Var(&c.rttMs, "rtt-ms", 0, "emulated round-trip time in ms (0: none)")
	fs.Float64Var(&c.connMbit, "conn-rate-mbit", 0, "emulated rate of each connection alone in Mbit/s, under --rate-gbit (0: no limit)")
	fs.StringVar(&c.link, "link", "loopback", fmt.Sprintf("link profile: loopback (no emulation unless --rate-gbit, --rtt-ms or --conn-rate-mbit say so) or s3 (%d Gbit/s shared, %d Mbit/s per connection, %d ms RTT, HTTPS; the three flags override its figures)", s3LinkGbit, s3LinkConnMbit, s3LinkRTTMs))
	fs.BoolVar(&c.tls, "tls", false, "serve the S3 endpoint over HTTPS with a CA made for the run, which every client trusts (default: on with --link s3)")
	fs.StringVar(&peers, "peers", strings.Join(allPeerTools, ","), "comma-separated other S3 filesystems to measure on "+strings.Join(peerScenarios, ", ")+": "+strings.Join(allPeerTools, ", ")+` (one not installed is skipped with a line saying so; "" for none)`)
	fs.StringVar(&mflags, "mount-flags", "", `extra flags for "modelfs mount", e.g. "--block-size 16MiB --concurrency 32"`)
	fs.BoolVar(&c.warm, "warm", true, "after each cold pass, time a warm pass on the same mount")
	fs.BoolVar(&c.remount, "remount", true, "give each scenario's mount a fresh --cache-dir and, after its passes, time a remount pass on a new mount with the same --cache-dir (false: no --cache-dir, no remount pass)")
	fs.BoolVar(&c.verify, "verify", true, "spot-check bytes read through each mount against the source (untimed)")
	fs.DurationVar(&c.settle, "settle", 0, "leave each modelfs mount idle this long after each timed pass, as a server that loads and then serves does before it restarts (0: the next pass at once)")
	fs.DurationVar(&c.holdFreed, "hold-freed-pages", 0, "on a guest that reports freed memory to its host (/sys/module/page_reporting), keep memory freed at least this long before it is reported, for the run, as a machine without a balloon does (e.g. 60s; 0: leave the guest's setting)")
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	if fs.NArg() > 0 {
		return c, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.size, err = parseSize(size); err != nil {
		return c, nil, fmt.Errorf("--size: %w", err)
	}
	if c.size < 64<<20 {
		return c, nil, fmt.Errorf("--size %s: want at least 64MiB", size)
	}
	if c.holdFreed < 0 {
		return c, nil, fmt.Errorf("--hold-freed-pages %v: must not be negative", c.holdFreed)
	}
	if c.runs < 1 {
		return c, nil, fmt.Errorf("--runs %d: want at least 1", c.runs)
	}
	if c.rateGbit < 0 || c.rttMs < 0 || c.connMbit < 0 {
		return c, nil, errors.New("--rate-gbit, --rtt-ms and --conn-rate-mbit must not be negative")
	}
	if !slices.Contains(allLinks, c.link) {
		return c, nil, fmt.Errorf("--link %q: want one of %s", c.link, strings.Join(allLinks, ", "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.link == "s3" {
		// The profile fills in what the command line did not say.
		if !set["rate-gbit"] {
			c.rateGbit = s3LinkGbit
		}
		if !set["conn-rate-mbit"] {
			c.connMbit = s3LinkConnMbit
		}
		if !set["rtt-ms"] {
			c.rttMs = s3LinkRTTMs
		}
		if !set["tls"] {
			c.tls = true
		}
	}
	if c.peers, err = pickList(peers, allPeerTools, "--peers"); err != nil {
		return c, nil, err
	}
	if c.scenarios, err = pickList(scen, allScenarios, "--scenarios"); err != nil {
		return c, nil, err
	}
	if c.baselines, err = pickList(base, allBaselines, "--baselines"); err != nil {
		return c, nil, err
	}
	c.mountFlags = strings.Fields(mflags)
	if c.remount {
		for _, f := range c.mountFlags {
			if name, _, _ := strings.Cut(strings.TrimLeft(f, "-"), "="); name == "cache-dir" && strings.HasPrefix(f, "-") {
				return c, nil, errors.New("--mount-flags: the bench gives each mount its own --cache-dir; add --remount=false to pass one")
			}
		}
	}
	flags := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { flags[f.Name] = f.Value.String() })
	return c, flags, nil
}

// pickList parses a comma-separated subset of known, keeping known's order.
func pickList(s string, known []string, flagName string) ([]string, error) {
	var out []string
	for _, x := range strings.Split(s, ",") {
		x = strings.TrimSpace(x)
		if x == "" {
			continue
		}
		if x == "all" {
			return known, nil
		}
		if !slices.Contains(known, x) {
			return nil, fmt.Errorf("%s: unknown name %q (want some of %s)", flagName, x, strings.Join(known, ", "))
		}
		out = append(out, x)
	}
	var ordered []string
	for _, k := range known {
		if slices.Contains(out, k) {
			ordered = append(ordered, k)
		}
	}
	return ordered, nil
}

// bench is the state of one invocation.
type bench struct {
	cfg      config
	cache    string // the bench's --cache-dir, absolute
	model    *benchModel
	packed   *packedModel // nil unless a pack-* scenario runs
	remote   *remoteProc
	client   *s3.Client
	endpoint string
	pki      *benchPKI // nil without --tls
	peers    []peerMode
	mnt      string
	env      []string
	series   map[string]*series
	order    []string
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

func run(ctx context.Context, cfg config, flags map[string]string) error {
	started := time.Now()
	if cfg.holdFreed > 0 {
		restore, err := holdFreedPages(pageReportingDir, cfg.holdFreed)
		if err != nil {
			return err
		}
		defer func() {
			if err := restore(); err != nil {
				logf("%v", err)
			}
		}()
	}
	machine := probeMachine(cfg.modelfs)
	if machine.Modelfs == "" {
		return fmt.Errorf("%s --version failed: build it first (make build)", cfg.modelfs)
	}
	fmt.Println(machine)
	fmt.Printf("command: %s\n", strings.Join(os.Args, " "))

	cache, err := filepath.Abs(cfg.cacheDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", cache, err)
	}
	// Everything under the cache dir is scratch: keep it out of git.
	_ = os.WriteFile(filepath.Join(cache, ".gitignore"), []byte("*\n"), 0o644)
	b := &bench{cfg: cfg, cache: cache, mnt: filepath.Join(cache, "mnt"), series: map[string]*series{}}
	if mounted(b.mnt) { // left by a bench that was killed
		logf("clearing a stale mount at %s", b.mnt)
		if out, err := runCmd(cfg.modelfs, "unmount", b.mnt); err != nil {
			return fmt.Errorf("clearing the stale mount at %s: %v: %s", b.mnt, err, out)
		}
	}
	if err := os.MkdirAll(b.mnt, 0o755); err != nil {
		return err
	}
	// Disk caches left by a killed bench: every cold pass starts without.
	stale, _ := filepath.Glob(filepath.Join(cache, diskCachePrefix+"*"))
	for _, d := range stale {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("clearing %s: %w", d, err)
		}
	}

	b.model, err = loadOrGenerateModel(filepath.Join(cache, "model-"+sizeLabel(cfg.size)), cfg.size, logf)
	if err != nil {
		return err
	}
	if len(b.model.Shards) < 4 && slices.Contains(cfg.scenarios, "concurrent-4") {
		return fmt.Errorf("the model has %d shards; concurrent-4 needs 4", len(b.model.Shards))
	}
	if slices.Contains(cfg.scenarios, "ttft") {
		// Untimed: sizes and faults in the buffer every ttft pass reuses.
		if _, _, _, err := firstTensor(filepath.Join(b.model.Dir, b.model.Shards[0]), nil); err != nil {
			return fmt.Errorf("ttft: %w", err)
		}
	}

	srvDir := filepath.Join(cache, "s3")
	if err := os.RemoveAll(srvDir); err != nil {
		return fmt.Errorf("clearing %s: %w", srvDir, err)
	}
	defer os.RemoveAll(srvDir)
	link := linkproxy.Options{RateBitsPerSec: cfg.rateGbit * 1e9, ConnBitsPerSec: cfg.connMbit * 1e6, RTT: time.Duration(cfg.rttMs * float64(time.Millisecond))}
	if cfg.tls {
		pkiDir := filepath.Join(cache, "tls")
		if err := os.RemoveAll(pkiDir); err != nil {
			return fmt.Errorf("clearing %s: %w", pkiDir, err)
		}
		defer os.RemoveAll(pkiDir)
		if b.pki, err = newBenchPKI(pkiDir); err != nil {
			return err
		}
	}
	b.remote, err = startRemote(srvDir, link, b.pki)
	if err != nil {
		return err
	}
	defer b.remote.Close()
	t0 := time.Now()
	if err := uploadModel(ctx, b.remote, b.model, bucket, prefix); err != nil {
		return err
	}
	if wantsPacked(cfg.scenarios) {
		b.packed, err = packAndUpload(ctx, cfg.modelfs, b.model, filepath.Join(cache, "packed-"+sizeLabel(cfg.size)), b.remote)
		if err != nil {
			return err
		}
		defer os.RemoveAll(b.packed.Dir)
		logf("packed the model with modelfs pack in %.1fs: %s -> %s (%.3f)", b.packed.Seconds,
			fmtBytes(b.model.total()), fmtBytes(b.packed.total()), float64(b.packed.total())/float64(b.model.total()))
	}
	hot, err := b.remote.warm(ctx)
	if err != nil {
		return fmt.Errorf("pre-reading the server's objects: %w", err)
	}
	logf("uploaded %d files (%s) and pre-read the server's copy (%s hot in the page cache) in %.1fs",
		len(b.model.Files), fmtBytes(b.model.total()), fmtBytes(hot), time.Since(t0).Seconds())
	b.endpoint = b.remote.Endpoint
	if link.Enabled() {
		logf("emulated link: %s, via %s", linkLabel(cfg), b.endpoint)
	} else {
		logf("link: loopback, no emulation (S3 server at %s)", b.endpoint)
	}
	var roots *x509.CertPool
	if b.pki != nil {
		roots = b.pki.Roots
	}
	b.client = newS3Client(b.endpoint, region, accessKey, secretKey, roots)
	var skipped []string
	b.peers, skipped = installedPeers(cfg.peers)
	for _, line := range skipped {
		logf("%s", line)
	}
	// modelfs takes every mount flag from MODELFS_* too: one left in the
	// environment (MODELFS_CACHE_DIR above all) would change what is
	// measured, or make the cold passes warm. --mount-flags is the way.
	// The CA settings of the machine's environment are left out too: with
	// --tls every client trusts the run's CA, set below, and an
	// AWS_CA_BUNDLE would replace it in the AWS SDKs (rclone's refuses to
	// start with one).
	var dropped []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(kv, "MODELFS_") || slices.Contains(caEnv, name) {
			dropped = append(dropped, name)
			continue
		}
		b.env = append(b.env, kv)
	}
	if len(dropped) > 0 {
		logf("not passing %s to the mounts (MODELFS_*: use --mount-flags)", strings.Join(dropped, ", "))
	}
	b.env = append(b.env, "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	modelfsEnv := b.env
	if b.pki != nil {
		modelfsEnv = append(slices.Clone(b.env), "SSL_CERT_FILE="+b.pki.CAFile)
	}
	defer os.RemoveAll(filepath.Join(cache, "download"))
	var peerFailures []string

	for i := 1; i <= cfg.runs; i++ {
		// Baselines and scenarios interleave run by run, so that drift in
		// the machine (thermal, page cache) spreads over all rows alike.
		if err := b.runBaselines(ctx, filepath.Join(cache, "download")); err != nil {
			return err
		}
		for _, name := range cfg.scenarios {
			if err := b.runScenario(ctx, name, modelfsEnv); err != nil {
				return fmt.Errorf("run %d, %s: %w", i, name, err)
			}
		}
		// A peer that fails is reported and left out of the later runs:
		// one broken tool does not cost the whole measurement.
		var ok []peerMode
		for _, mode := range b.peers {
			var err error
			for _, name := range cfg.scenarios {
				if !slices.Contains(peerScenarios, name) {
					continue
				}
				if err = b.runPeerScenario(ctx, mode, name); err != nil {
					err = fmt.Errorf("peer %s failed in run %d, %s: %w", mode.Name, i, name, err)
					break
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				logf("%v; left out of the remaining runs", err)
				peerFailures = append(peerFailures, err.Error())
				continue
			}
			ok = append(ok, mode)
		}
		b.peers = ok
	}

	var all []series
	for _, key := range b.order {
		all = append(all, *b.series[key])
	}
	rows := buildRows(all)
	fmt.Printf("model: %s in %d files (%d safetensors shards of up to %s, GGUF %s); link: %s; mount flags: %q; %d runs\n\n",
		fmtBytes(b.model.total()), len(b.model.Files), len(b.model.Shards), fmtBytes(b.model.size(b.model.Shards[0])),
		fmtBytes(b.model.size(b.model.GGUF)), linkLabel(cfg), strings.Join(cfg.mountFlags, " "), cfg.runs)
	writeTable(os.Stdout, rows)
	writeHeaderTable(os.Stdout, rows)
	for _, line := range skipped {
		fmt.Println(line)
	}
	for _, f := range peerFailures {
		fmt.Println(f)
	}
	if b.packed != nil {
		fmt.Printf("\npacked: %s in %d objects (%.3f of the model), modelfs pack took %.1fs\n", fmtBytes(b.packed.total()),
			len(b.packed.Files), float64(b.packed.total())/float64(b.model.total()), b.packed.Seconds)
		for _, line := range packedRatios(rows) {
			fmt.Println(line)
		}
	}
	elapsed := time.Since(started)
	fmt.Printf("\ntotal time %.0fs\n", elapsed.Seconds())
	rep := report{
		Machine: machine, Command: strings.Join(os.Args, " "), Flags: flags,
		Model:   modelReport{Dir: b.model.Dir, TotalBytes: b.model.total(), Files: b.model.Files},
		Packed:  b.packed,
		Started: started.UTC().Format(time.RFC3339), Duration: elapsed.Seconds(), Rows: rows,
	}
	if err := writeJSON(cfg.jsonPath, rep); err != nil {
		return err
	}
	logf("wrote %s", cfg.jsonPath)
	return nil
}

func linkLabel(cfg config) string {
	var l string
	switch {
	case cfg.rateGbit == 0 && cfg.rttMs == 0 && cfg.connMbit == 0:
		l = "loopback"
	case cfg.connMbit > 0:
		l = fmt.Sprintf("%g Gbit/s, %g Mbit/s per connection, %g ms RTT", cfg.rateGbit, cfg.connMbit, cfg.rttMs)
	default:
		l = fmt.Sprintf("%g Gbit/s, %g ms RTT", cfg.rateGbit, cfg.rttMs)
	}
	if cfg.link != "loopback" {
		l = cfg.link + " profile: " + l
	}
	if cfg.tls {
		l += ", HTTPS"
	}
	return l
}

// record appends a sample to the named series, creating it in table order.
// rawRef and localRef name the baselines a cold, or warm and remount, row
// is compared with.
func (b *bench) record(name, phase, rawRef, localRef string, s sample) {
	b.recordPeer(name, phase, "", rawRef, localRef, s)
}

// recordPeer is record for a peer's row ("" for modelfs).
func (b *bench) recordPeer(name, phase, peer, rawRef, localRef string, s sample) {
	key := name + " " + phase + " " + peer
	sr := b.series[key]
	if sr == nil {
		sr = &series{Name: name, Phase: phase, Peer: peer, RawRef: rawRef, LocalRef: localRef, FirstBytes: name == "ttft"}
		b.series[key] = sr
		b.order = append(b.order, key)
	}
	sr.Samples = append(sr.Samples, s)
	label := name
	if peer != "" {
		label += " · " + peer
	}
	line := fmt.Sprintf("run %d  %-18s %-8s %9s %7.2fs %6.0f MB/s   CPU s: reader %.2f server %.2f",
		len(sr.Samples), label, phase, fmtBytes(s.Bytes), s.Seconds, mbps(s.Bytes, s.Seconds), s.ReaderCPU, s.ServerCPU)
	if s.MountCPU >= 0 {
		line += fmt.Sprintf(" mount %.2f", s.MountCPU)
	}
	line += fmt.Sprintf("   GETs %d", s.S3Gets)
	if l := s.S3Life; l != nil {
		line += fmt.Sprintf(" (mount's life: %d, %s)", l.Gets, fmtBytes(l.Bytes))
	}
	if s.CacheBytes > 0 {
		line += fmt.Sprintf("   cache dir %s, %.0f%% in page cache", fmtBytes(s.CacheBytes), 100*float64(s.CacheResident)/float64(s.CacheBytes))
	}
	if h := s.Header; h != nil {
		line += fmt.Sprintf("   header: first byte %.1f ms, parsed %.1f ms", h.FirstByte*1000, h.Parsed*1000)
	}
	if m := s.Mount; m != nil {
		line += fmt.Sprintf("   mount's summary: fuse_reads %d (%s) passthrough_opens %d loads %d disk_hits %d disk_writes %d",
			m["fuse_reads"], fmtBytes(m["fuse_read_bytes"]), m["passthrough_opens"], m["loads"], m["disk_hits"], m["disk_writes"])
	}
	logf("%s", line)
}

// measure times fn and collects the CPU and S3 counters around it. mp may
// be nil (baselines).
func (b *bench) measure(ctx context.Context, mp *mountProc, fn func() (int64, error)) (sample, error) {
	runtime.GC() // earlier garbage is not this pass's cost
	st0, err := b.remote.stats(ctx)
	if err != nil {
		return sample{}, err
	}
	scpu0, err := mountproc.CPUSeconds(b.remote.pid())
	if err != nil {
		return sample{}, err
	}
	mcpu0 := 0.0
	if mp != nil {
		if mcpu0, err = mountproc.CPUSeconds(mp.pid()); err != nil {
			return sample{}, err
		}
	}
	cpu0 := selfCPU()
	t0 := time.Now()
	n, err := fn()
	secs := time.Since(t0).Seconds()
	cpu1 := selfCPU()
	if err != nil {
		return sample{}, err
	}
	s := sample{Seconds: secs, Bytes: n, MountCPU: -1, ReaderCPU: cpu1 - cpu0}
	if mp != nil {
		mcpu1, err := mountproc.CPUSeconds(mp.pid())
		if err != nil {
			return sample{}, err
		}
		s.MountCPU = mcpu1 - mcpu0
	}
	scpu1, err := mountproc.CPUSeconds(b.remote.pid())
	if err != nil {
		return sample{}, err
	}
	s.ServerCPU = scpu1 - scpu0
	st1, err := b.remote.stats(ctx)
	if err != nil {
		return sample{}, err
	}
	s.S3Gets, s.S3Bytes = st1.Gets-st0.Gets, st1.BytesServed-st0.BytesServed
	return s, nil
}

// lifeStats sets the S3Life of out[0], the first pass of a mount that has
// stopped: what the server sent since st0, taken before the mount
// started, less what it sent during the mount's later passes (a warm
// pass), which their own rows show.
func (b *bench) lifeStats(ctx context.Context, st0 s3server.Stats, out []sample) error {
	st1, err := b.remote.stats(ctx)
	if err != nil {
		return err
	}
	l := s3Count{Gets: st1.Gets - st0.Gets, Bytes: st1.BytesServed - st0.BytesServed}
	for _, later := range out[1:] {
		l.Gets, l.Bytes = l.Gets-later.S3Gets, l.Bytes-later.S3Bytes
	}
	out[0].S3Life = &l
	return nil
}

func (b *bench) runBaselines(ctx context.Context, downloadDir string) error {
	want := func(n string) bool { return slices.Contains(b.cfg.baselines, n) }
	if want("raw-get") {
		s, err := b.measure(ctx, nil, func() (int64, error) {
			return parallelGet(ctx, b.client, bucket, prefix, b.model.Files, nil)
		})
		if err != nil {
			return fmt.Errorf("raw-get: %w", err)
		}
		b.record("raw-get", "baseline", "", "", s)
		if slices.Contains(b.cfg.scenarios, "seq-2g") {
			s, err := b.measure(ctx, nil, func() (int64, error) {
				return parallelGet(ctx, b.client, bucket, prefix, []modelFile{b.model.largest()}, nil)
			})
			if err != nil {
				return fmt.Errorf("raw-get of the largest object: %w", err)
			}
			b.record("raw-get-largest", "baseline", "", "", s)
		}
	}
	if want("download-then-read") || want("local-read") || want("local-modelfs") {
		s, err := b.measure(ctx, nil, func() (int64, error) {
			return downloadThenRead(ctx, b.client, bucket, prefix, b.model.Files, downloadDir)
		})
		if err != nil {
			return fmt.Errorf("download-then-read: %w", err)
		}
		if want("download-then-read") {
			b.record("download-then-read", "baseline", "", "", s)
		}
	}
	if want("local-read") {
		names := make([]string, len(b.model.Files))
		for i, f := range b.model.Files {
			names[i] = f.Name
		}
		s, err := b.measure(ctx, nil, func() (int64, error) { return readSeq(ctx, downloadDir, names) })
		if err != nil {
			return fmt.Errorf("local-read: %w", err)
		}
		b.record("local-read", "baseline", "", "", s)
		// Each other scenario's own reads of the copy: what its warm and
		// remount passes are compared with (an mmap pass that touches a
		// byte per page copies nothing, so read() is no reference for it).
		measured := map[string]bool{}
		for _, name := range b.cfg.scenarios {
			sp := b.spec(name)
			// A pack-* scenario shares its namesake's reference.
			if sp.localRef == "local-read" || measured[sp.localRef] {
				continue
			}
			measured[sp.localRef] = true
			s, err := b.measure(ctx, nil, func() (int64, error) { return sp.read(ctx, downloadDir) })
			if err != nil {
				return fmt.Errorf("%s: %w", sp.localRef, err)
			}
			b.record(sp.localRef, "baseline", "", "", s)
		}
	}
	if want("local-modelfs") {
		if err := b.runLocalModelfs(ctx, downloadDir); err != nil {
			return err
		}
	}
	// Deleting the copy frees its page cache (and its dirty pages), which
	// the scenarios would otherwise compete with.
	if err := os.RemoveAll(downloadDir); err != nil {
		return fmt.Errorf("removing the download: %w", err)
	}
	return nil
}

// runLocalModelfs reads the downloaded copy, hot in the page cache,
// through a fresh modelfs mount of it (file://, no disk tier), as seq
// does: the mount's CPU for serving bytes with no network at all. What a
// cold seq pass costs beyond it is the fetching.
func (b *bench) runLocalModelfs(ctx context.Context, downloadDir string) error {
	names := make([]string, len(b.model.Files))
	for i, f := range b.model.Files {
		names[i] = f.Name
	}
	if _, err := readSeq(ctx, downloadDir, names); err != nil { // into the page cache
		return fmt.Errorf("local-modelfs: %w", err)
	}
	mp, err := startMount(ctx, b.cfg.modelfs, "file://"+downloadDir, b.mnt, b.cfg.mountFlags, b.env)
	if err != nil {
		return fmt.Errorf("local-modelfs: mounting the local copy: %w", err)
	}
	s, err := b.measure(ctx, mp, func() (int64, error) { return readSeq(ctx, b.mnt, names) })
	u, serr := mp.stop()
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("local-modelfs: %w", err)
	}
	s.MountCPUExit, s.MountPeakRSS, s.Mount = u.CPUSeconds, u.MaxRSS, u.Summary
	b.record("local-modelfs", "baseline", "", "", s)
	return nil
}

// scenarioSpec is what a scenario reads and how.
type scenarioSpec struct {
	prefix string   // where on the server the model it mounts is
	files  []string // what it reads, for the spot check
	rawRef string
	// localRef names the baseline of the same reads on the local copy.
	localRef string
	read     func(ctx context.Context, root string) (int64, error)
	verify   func(root string) error
	// header, when set, is where read leaves the header latencies of its
	// last pass (ttft).
	header *headerTimes
}

func (b *bench) spec(name string) scenarioSpec {
	if plain, ok := strings.CutPrefix(name, packedScenario); ok {
		s := b.spec(plain)
		s.prefix = packedPrefix
		return s
	}
	m := b.model
	var all []string
	for _, f := range m.Files {
		all = append(all, f.Name)
	}
	s := scenarioSpec{prefix: prefix, rawRef: "raw-get", localRef: "local-" + name}
	switch name {
	case "seq":
		s.files, s.localRef = all, "local-read"
		s.read = func(ctx context.Context, root string) (int64, error) { return readSeq(ctx, root, all) }
	case "seq-2g":
		big := []string{m.largest().Name}
		s.files, s.rawRef, s.localRef = big, "raw-get-largest", "local-read-largest"
		s.read = func(ctx context.Context, root string) (int64, error) { return readSeq(ctx, root, big) }
	case "load":
		s.files = append([]string{"config.json", safetensorsIndex}, m.Shards...)
		s.read = func(ctx context.Context, root string) (int64, error) { return loadLikeTransformers(ctx, root) }
	case "mmap-header", "mmap-random":
		w := m.weightFiles()
		s.files = w
		shuffle := name == "mmap-random"
		s.read = func(ctx context.Context, root string) (int64, error) { return mmapTouch(ctx, root, w, shuffle) }
	case "concurrent-4":
		four := m.Shards[:4]
		s.files = four
		s.read = func(ctx context.Context, root string) (int64, error) { return readConcurrent(ctx, root, four) }
	case "ttft":
		first := m.Shards[0]
		s.rawRef = "" // a latency, not a throughput: see FirstBytes
		s.header = &headerTimes{}
		s.read = func(ctx context.Context, root string) (int64, error) {
			n, _, _, err := firstTensor(filepath.Join(root, first), s.header)
			return n, err
		}
		s.verify = func(root string) error {
			_, got, off, err := firstTensor(filepath.Join(root, first), nil)
			if err != nil {
				return err
			}
			want := make([]byte, len(got))
			f, err := os.Open(filepath.Join(m.Dir, first))
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := f.ReadAt(want, off); err != nil {
				return fmt.Errorf("reading the source of %s: %w", first, err)
			}
			if string(got) != string(want) {
				return fmt.Errorf("spot check: the first tensor of %s differs from the source", first)
			}
			return nil
		}
	}
	if s.verify == nil {
		files := s.files
		s.verify = func(root string) error { return spotCheck(root, m.Dir, files, 16) }
	}
	return s
}

// diskCachePrefix names the scenarios' modelfs cache dirs in the bench's.
const diskCachePrefix = "disk-cache-"

// runScenario does one cold pass on a fresh mount, then a warm pass on the
// same mount, then stops it and attributes its rusage. With --remount the
// mount has a fresh, empty --cache-dir, and after it stops a new mount
// with that same --cache-dir times the remount pass; the cache dir is
// removed at the end.
func (b *bench) runScenario(ctx context.Context, name string, env []string) error {
	spec := b.spec(name)
	args := append([]string{"--endpoint", b.endpoint, "--region", region}, b.cfg.mountFlags...)
	dir := filepath.Join(b.cache, diskCachePrefix+name)
	if b.cfg.remount {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("clearing %s: %w", dir, err)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		// Deleting the cache also drops its page cache (and any dirty
		// pages), which later passes would otherwise compete with.
		defer os.RemoveAll(dir)
		args = append(args, "--cache-dir", dir)
	}
	source := "s3://" + bucket + "/" + spec.prefix
	// passes runs the timed passes named on one new mount and stops it,
	// then runs the spot check on a mount of its own, so that what the
	// first mount fetched over its life (see sample.S3LifeBytes) is the
	// passes' alone.
	passes := func(names ...string) ([]sample, exitUsage, error) {
		st0, err := b.remote.stats(ctx)
		if err != nil {
			return nil, exitUsage{}, err
		}
		mp, err := startMount(ctx, b.cfg.modelfs, source, b.mnt, args, env)
		if err != nil {
			return nil, exitUsage{}, fmt.Errorf("mounting for the %s pass: %w", strings.Join(names, " and "), err)
		}
		var out []sample
		for _, pass := range names {
			s, err := b.measure(ctx, mp, func() (int64, error) { return spec.read(ctx, b.mnt) })
			if err != nil {
				_, serr := mp.stop()
				return nil, exitUsage{}, errors.Join(fmt.Errorf("%s pass: %w", pass, err), serr)
			}
			if spec.header != nil {
				h := *spec.header
				s.Header = &h
			}
			out = append(out, s)
			if err := settle(ctx, b.cfg.settle); err != nil {
				_, serr := mp.stop()
				return nil, exitUsage{}, errors.Join(err, serr)
			}
		}
		u, err := mp.stop()
		if err != nil {
			return nil, exitUsage{}, err
		}
		if err := b.lifeStats(ctx, st0, out); err != nil {
			return nil, exitUsage{}, err
		}
		if b.cfg.verify {
			mp, err := startMount(ctx, b.cfg.modelfs, source, b.mnt, args, env)
			if err != nil {
				return nil, exitUsage{}, fmt.Errorf("mounting for the spot check: %w", err)
			}
			err = spec.verify(b.mnt)
			if _, serr := mp.stop(); err != nil || serr != nil {
				return nil, exitUsage{}, errors.Join(err, serr)
			}
		}
		return out, u, nil
	}
	names := []string{"cold"}
	if b.cfg.warm {
		names = append(names, "warm")
	}
	first, u, err := passes(names...)
	if err != nil {
		return err
	}
	cold := first[0]
	cold.MountCPUExit, cold.MountPeakRSS, cold.Mount = u.CPUSeconds, u.MaxRSS, u.Summary
	b.record(name, "cold", spec.rawRef, "", cold)
	if b.cfg.warm {
		warm := first[1]
		warm.MountPeakRSS = u.MaxRSS
		b.record(name, "warm", "", spec.localRef, warm)
	}
	if !b.cfg.remount {
		return nil
	}
	// The condition the remount pass starts in: the cache files in the page
	// cache, as local-read's copy is (see the docs), and how much of them
	// that left there.
	if _, err := warmDir(dir); err != nil {
		return fmt.Errorf("reading %s into the page cache: %w", dir, err)
	}
	resident, total, err := residentBytes(dir)
	if err != nil {
		return fmt.Errorf("page-cache residency of %s: %w", dir, err)
	}
	second, u, err := passes("remount")
	if err != nil {
		return err
	}
	re := second[0]
	re.MountCPUExit, re.MountPeakRSS, re.Mount = u.CPUSeconds, u.MaxRSS, u.Summary
	re.CacheBytes, re.CacheResident = total, resident
	b.record(name, "remount", "", spec.localRef, re)
	return nil
}

// settle waits d, or until ctx ends.
func settle(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// sizeLabel names a size for the cache directory: 2GiB, 512MiB, or bytes.
func sizeLabel(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	default:
		return fmt.Sprintf("%d", n)
	}
}
