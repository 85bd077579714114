package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/prefetch"
)

func warmCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return &cli.Command{
		Name:      "warm",
		Usage:     "fill the disk cache ahead of time, verified and resumable (the init-container mode)",
		ArgsUsage: "SOURCE | --manifest FILE",
		Description: sourceHelp + `

Blocks already in --cache-dir are verified, not fetched again, so an
interrupted warm picks up where it stopped. Files are fetched in the order a
loader reads them (--profile, else layer order from the model's headers),
then everything else. Every file is verified as it completes against the
checksum its store keeps (S3: the full-object CRC64NVME, CRC32C, CRC32,
SHA1 or SHA256, else the MD5 a single-part ETag is; a pack's sha256); with
--sha256, each named file is also hashed. On a mismatch the file's cached
blocks are dropped and warm exits non-zero naming it. A file whose store
keeps no usable checksum is reported unverified, and fails the warm with
--require-verified.

With --manifest, every model of the manifest is warmed (file names in
--sha256 are then MODEL/PATH), and the manifest's sha256 values are
verified the same way.`,
		Flags: append(sourceFlags(),
			&cli.StringFlag{Name: "manifest", Usage: "warm every model this JSON file names (see mount --help), instead of one SOURCE", EnvVars: env("MANIFEST")},
			&cli.StringSliceFlag{Name: "sha256", Usage: "expected sha256 of a file, as NAME=HEX (repeatable)", EnvVars: env("SHA256")},
			&cli.StringFlag{Name: "sha256-file", Usage: "expected sha256s in sha256sum's output format (HEX  NAME per line)", EnvVars: env("SHA256_FILE")},
			&cli.StringFlag{Name: "profile", Usage: "fetch in the order of this recorded load profile first", EnvVars: env("PROFILE")},
			&cli.BoolFlag{Name: "require-verified", Usage: "fail when a file's store keeps no checksum to verify it against", EnvVars: env("REQUIRE_VERIFIED")},
			&cli.DurationFlag{Name: "log-interval", Value: 10 * time.Second, Usage: "how often to log progress when stderr is not a terminal", EnvVars: env("LOG_INTERVAL")},
		),
		Action: runWarm,
	}
}

func runWarm(c *cli.Context) error {
	manifest := c.String("manifest")
	switch {
	case manifest != "" && c.NArg() > 0:
		return fmt.Errorf("warm: --manifest and a SOURCE argument are mutually exclusive")
	case manifest == "" && c.NArg() != 1:
		return usagef("warm: want one argument, SOURCE (got %d)", c.NArg())
	}
	if c.String("cache-dir") == "" {
		return fmt.Errorf("warm: --cache-dir is required: warm fills a disk cache")
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	want, err := parseSHA256Flags(c.StringSlice("sha256"))
	if err != nil {
		return err
	}
	if path := c.String("sha256-file"); path != "" {
		if err := readSHA256File(path, want); err != nil {
			return err
		}
	}
	specs, err := specsFor(manifest, c.Args().First())
	if err != nil {
		return err
	}
	blockSize, err := blockSizeFlag(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Warm writes to disk, not RAM: the RAM tier only holds headers.
	r, err := openRemote(ctx, c, log, 4*blockSize, nil, specs, manifest)
	if err != nil {
		return err
	}
	defer r.cache.Close()
	sums := map[string]fileSum{}
	for name, sum := range want {
		if _, ok := r.loader.files[name]; !ok {
			return fmt.Errorf("--sha256 %s: no such file in %s", name, r)
		}
		sums[name] = fileSum{file: name, sum: sum}
	}
	fromManifest, err := expectedSums(r.models)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", manifest, err)
	}
	for path, s := range fromManifest {
		if prev, ok := sums[path]; ok && prev.sum != s.sum {
			return fmt.Errorf("model %q: file %q: --sha256 and the manifest give different hashes", s.model, s.file)
		}
		sums[path] = s
	}

	tasks := warmOrder(ctx, r, c.String("profile"), blockSize, log)
	var total int64
	for _, t := range tasks {
		total += t.size
	}
	t0 := time.Now()
	prog := newProgress(total, c.Duration("log-interval"), log)
	var fetched atomic.Int64
	err = runTasks(ctx, tasks, c.Int("concurrency"), func(ctx context.Context, t warmTask) error {
		got, err := r.cache.Fill(ctx, t.file.cacheID(), t.index)
		if got {
			fetched.Add(t.size)
		}
		prog.add(t.size)
		if errors.Is(err, blockcache.ErrCorrupt) {
			return nil // reported below, with every other file's outcome
		}
		return err
	})
	prog.finish()
	if err != nil {
		return fmt.Errorf("warm: %w", err)
	}
	var failed, unverified []string
	verified := 0
	for _, f := range r.files {
		st, verr := r.cache.Object(f.cacheID()).Verification()
		switch st {
		case blockcache.Verified:
			verified++
		case blockcache.VerifyFailed:
			failed = append(failed, fmt.Sprintf("%s: %v", warmName(f), verr))
		default:
			unverified = append(unverified, warmName(f))
			log.Warn("file not verified: its store keeps no usable checksum", "file", f.path)
		}
	}
	checks := wholeFileChecks(r, sums)
	for _, ck := range checks {
		if st, _ := r.cache.Object(ck.file.cacheID()).Verification(); st == blockcache.VerifyFailed {
			continue // already reported, and dropped
		}
		if err := ck.verify(r.cache.Object(ck.file.cacheID())); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", warmName(ck.file), err))
			if derr := r.cache.DropObject(ck.file.cacheID()); derr != nil {
				log.Error("could not drop the cached blocks", "file", ck.file.path, "err", derr)
			}
		}
	}
	d := time.Since(t0)
	fmt.Printf("warmed %d files, %s (%s fetched, %s already cached) in %s, %s/s; %d verified against the store, %d unverified\n",
		len(r.files), formatSize(total), formatSize(fetched.Load()), formatSize(total-fetched.Load()),
		d.Round(time.Millisecond), formatSize(int64(float64(fetched.Load())/max(d.Seconds(), 1e-3))), verified, len(unverified))
	if len(failed) > 0 {
		return fmt.Errorf("warm: checksum mismatch, cached blocks dropped: %s", strings.Join(failed, "; "))
	}
	if len(unverified) > 0 && c.Bool("require-verified") {
		return fmt.Errorf("warm: --require-verified: no store checksum to verify %s", strings.Join(unverified, ", "))
	}
	return nil
}

// warmName names a file in warm's messages.
func warmName(f remoteFile) string {
	if m := f.model.spec.Name; m != "" {
		return fmt.Sprintf("model %q file %q", m, f.obj.Key)
	}
	return f.path
}

func parseSHA256Flags(vals []string) (map[string]string, error) {
	want := map[string]string{}
	for _, v := range vals {
		name, sum, ok := strings.Cut(v, "=")
		sum = strings.ToLower(strings.TrimSpace(sum))
		if _, err := hex.DecodeString(sum); !ok || name == "" || len(sum) != 64 || err != nil {
			return nil, usagef("--sha256 %q: want NAME=<64 hex digits>", v)
		}
		want[name] = sum
	}
	return want, nil
}

// readSHA256File adds the sums of a sha256sum-style manifest to want.
func readSHA256File(path string, want map[string]string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--sha256-file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 16<<20))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimLeft(name, " "), "*") // "*" marks binary mode
		parsed, err := parseSHA256Flags([]string{name + "=" + sum})
		if !ok || err != nil {
			return fmt.Errorf("--sha256-file %s, line %d: want \"HEX  NAME\"", path, n)
		}
		want[name] = parsed[name]
	}
	return sc.Err()
}

// fileCheck is one sha256 given on the command line or in the manifest,
// verified once the file is cached.
type fileCheck struct {
	file remoteFile
	want []byte
}

// wholeFileChecks gathers the sha256 values given, by path in the mount.
// The store's own checksums are checked by the cache as files complete.
func wholeFileChecks(r *remote, want map[string]fileSum) []fileCheck {
	var checks []fileCheck
	for _, f := range r.files {
		if s, ok := want[f.path]; ok {
			sum, _ := hex.DecodeString(s.sum)
			checks = append(checks, fileCheck{f, sum})
		}
	}
	return checks
}

// verify hashes the object, complete and block-verified in the disk cache.
func (ck fileCheck) verify(o *blockcache.Object) error {
	b, ok := o.VerifiedBacking()
	if !ok {
		return fmt.Errorf("not completely cached")
	}
	defer b.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReaderSize(b.File, 1<<20)); err != nil {
		return err
	}
	if got := h.Sum(nil); !bytes.Equal(got, ck.want) {
		return fmt.Errorf("sha256 is %x, want %x", got, ck.want)
	}
	return nil
}

type warmTask struct {
	file  remoteFile
	index int64
	size  int64
}

// warmOrder lists every block once: each model's plan (profile or layer
// order) first, model by model, then the rest of each file in order.
func warmOrder(ctx context.Context, r *remote, profile string, bs int64, log *slog.Logger) []warmTask {
	p := &prefetcher{mode: "auto", profile: profile, log: log, smallFile: 1 << 20}
	p.attach(r)
	var fromProfile, plan []prefetch.Range
	if profile != "" {
		fromProfile = p.profilePlan()
	}
	for _, g := range p.groups {
		gp, _ := p.groupPlan(ctx, g.paths, fromProfile, true)
		plan = append(plan, gp...)
	}
	seen := map[string]map[int64]bool{}
	var tasks []warmTask
	add := func(f remoteFile, i int64) {
		if seen[f.path] == nil {
			seen[f.path] = map[int64]bool{}
		}
		if i*bs >= f.obj.Size || seen[f.path][i] {
			return
		}
		seen[f.path][i] = true
		tasks = append(tasks, warmTask{file: f, index: i, size: min(bs, f.obj.Size-i*bs)})
	}
	for _, rg := range plan {
		f, ok := r.loader.files[rg.Path]
		if !ok || rg.Len <= 0 {
			continue
		}
		for i := rg.Off / bs; i <= (rg.Off+rg.Len-1)/bs; i++ {
			add(f, i)
		}
	}
	for _, f := range r.files {
		for i := int64(0); i*bs < f.obj.Size; i++ {
			add(f, i)
		}
	}
	return tasks
}

// runTasks runs fn over tasks with n workers, in order of start, stopping
// at the first error.
func runTasks(ctx context.Context, tasks []warmTask, n int, fn func(context.Context, warmTask) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan warmTask)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range next {
				if err := fn(ctx, t); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for _, t := range tasks {
		select {
		case next <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && err != context.Canceled {
		return err
	}
	return ctx.Err()
}

// progress is a bar on a terminal and a periodic log line elsewhere.
type progress struct {
	bar   *progressbar.ProgressBar
	total int64
	done  atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newProgress(total int64, every time.Duration, log *slog.Logger) *progress {
	p := &progress{total: total, stop: make(chan struct{})}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("warming"), progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionFullWidth())
		return p
	}
	t0 := time.Now()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
				done := p.done.Load()
				rate := float64(done) / time.Since(t0).Seconds()
				eta := time.Duration(float64(total-done) / max(rate, 1) * float64(time.Second))
				log.Info("warm progress", "done", formatSize(done), "total", formatSize(total),
					"percent", fmt.Sprintf("%.1f", percent(done, total)), "rate", formatSize(int64(rate))+"/s", "eta", eta.Round(time.Second))
			}
		}
	}()
	return p
}

func (p *progress) add(n int64) {
	p.done.Add(n)
	if p.bar != nil {
		p.bar.Add64(n)
	}
}

func (p *progress) finish() {
	close(p.stop)
	p.wg.Wait()
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
}
