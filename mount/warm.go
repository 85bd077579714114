package mount

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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/modelformat/loadorder"
	"github.com/modelfs/modelfs/mount/config"
)

// WarmOptions are what Warm needs besides its settings.
type WarmOptions struct {
	// Logger receives the log; nil discards it.
	Logger *slog.Logger
	// Wrap, if set, puts layers in front of each opened source.
	Wrap WrapFunc
	// Progress, if set, is called once the bytes to warm are known; what
	// it returns is told of each block done, then finished.
	Progress func(total int64) Progress
}

// Progress follows a warm.
type Progress interface {
	Add(n int64)
	Finish()
}

// WarmReport is what a warm did. Failed and Unverified name files; a
// failed file's cached blocks were dropped.
type WarmReport struct {
	Files      int
	Bytes      int64 // of every file
	Fetched    int64 // from the sources; the rest was cached already
	Took       time.Duration
	Verified   int
	Unverified []string
	Failed     []string
}

// Err is the report's failure, if any: a checksum mismatch, or with
// requireVerified a file that could not be verified.
func (r *WarmReport) Err(requireVerified bool) error {
	if len(r.Failed) > 0 {
		return fmt.Errorf("warm: checksum mismatch, cached blocks dropped: %s", strings.Join(r.Failed, "; "))
	}
	if len(r.Unverified) > 0 && requireVerified {
		return fmt.Errorf("warm: --require-verified: no store checksum to verify %s", strings.Join(r.Unverified, ", "))
	}
	return nil
}

// Warm fills the disk cache with every block of cfg's sources, each
// model's plan (profile or layer order) first, and verifies every file
// as it completes: against its store's checksum, and against cfg.SHA256
// and the manifest's hashes. cfg has passed Validate. Blocks already
// cached are verified, not fetched, so an interrupted warm resumes.
func Warm(ctx context.Context, cfg config.Warm, opts WarmOptions) (*WarmReport, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	specs, err := specsFor(cfg.Manifest, cfg.Source)
	if err != nil {
		return nil, err
	}
	blockSize := cfg.BlockSize
	// Warm writes to disk, not RAM: the RAM tier only holds headers.
	r, err := openRemote(ctx, cfg.Sources, openOptions{log: log, memBytes: 4 * blockSize, wrap: opts.Wrap, warm: true}, specs, cfg.Manifest)
	if err != nil {
		return nil, err
	}
	defer r.close()
	sums := map[string]fileSum{}
	for name, sum := range cfg.SHA256 {
		if _, ok := r.loader.files[name]; !ok {
			return nil, fmt.Errorf("--sha256 %s: no such file in %s", name, r)
		}
		sums[name] = fileSum{file: name, sum: strings.ToLower(sum)}
	}
	fromManifest, err := expectedSums(r.models)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", cfg.Manifest, err)
	}
	for path, s := range fromManifest {
		if prev, ok := sums[path]; ok && prev.sum != s.sum {
			return nil, fmt.Errorf("model %q: file %q: --sha256 and the manifest give different hashes", s.model, s.file)
		}
		sums[path] = s
	}

	tasks := warmOrder(ctx, r, cfg.Profile, blockSize, log)
	var total int64
	for _, t := range tasks {
		total += t.size
	}
	t0 := time.Now()
	var prog Progress = noProgress{}
	if opts.Progress != nil {
		prog = opts.Progress(total)
	}
	var fetched atomic.Int64
	err = runTasks(ctx, tasks, cfg.Concurrency, func(ctx context.Context, t warmTask) error {
		got, err := r.cache.Fill(ctx, t.file.cacheID(), t.index)
		if got {
			fetched.Add(t.size)
		}
		prog.Add(t.size)
		if errors.Is(err, blockcache.ErrCorrupt) {
			return nil // reported below, with every other file's outcome
		}
		return err
	})
	prog.Finish()
	if err != nil {
		return nil, fmt.Errorf("warm: %w", err)
	}
	rep := &WarmReport{Files: len(r.files), Bytes: total}
	for _, f := range r.files {
		st, verr := r.cache.Object(f.cacheID()).Verification()
		switch st {
		case blockcache.Verified:
			rep.Verified++
		case blockcache.VerifyFailed:
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", warmName(f), verr))
		default:
			rep.Unverified = append(rep.Unverified, warmName(f))
			log.Warn("file not verified: its store keeps no usable checksum", "file", f.path)
		}
	}
	checks := wholeFileChecks(r, sums)
	for _, ck := range checks {
		if st, _ := r.cache.Object(ck.file.cacheID()).Verification(); st == blockcache.VerifyFailed {
			continue // already reported, and dropped
		}
		if err := ck.verify(r.cache.Object(ck.file.cacheID())); err != nil {
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", warmName(ck.file), err))
			if derr := r.cache.DropObject(ck.file.cacheID()); derr != nil {
				log.Error("could not drop the cached blocks", "file", ck.file.path, "err", derr)
			}
		}
	}
	rep.Fetched, rep.Took = fetched.Load(), time.Since(t0)
	return rep, nil
}

type noProgress struct{}

func (noProgress) Add(int64) {}
func (noProgress) Finish()   {}

// warmName names a file in warm's messages.
func warmName(f remoteFile) string {
	if m := f.model.spec.Name; m != "" {
		return fmt.Sprintf("model %q file %q", m, f.obj.Key)
	}
	return f.path
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
	var fromProfile, plan []loadorder.Range
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
