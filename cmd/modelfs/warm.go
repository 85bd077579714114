package main

import (
	"bufio"
	"encoding/hex"
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

	"github.com/modelfs/modelfs/mount"
	"github.com/modelfs/modelfs/mount/config"
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
	src, err := sourcesConfig(c, c.Args().First(), manifest)
	if err != nil {
		return err
	}
	cfg := config.Warm{Sources: src, Profile: c.String("profile"), SHA256: want, RequireVerified: c.Bool("require-verified")}
	if err := validate(&cfg); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := mount.Warm(ctx, cfg, mount.WarmOptions{Logger: log, Wrap: wrapSource, Progress: func(total int64) mount.Progress {
		return newProgress(total, c.Duration("log-interval"), log)
	}})
	if err != nil {
		return err
	}
	d := rep.Took
	fmt.Printf("warmed %d files, %s (%s fetched, %s already cached) in %s, %s/s; %d verified against the store, %d unverified\n",
		rep.Files, formatSize(rep.Bytes), formatSize(rep.Fetched), formatSize(rep.Bytes-rep.Fetched),
		d.Round(time.Millisecond), formatSize(int64(float64(rep.Fetched)/max(d.Seconds(), 1e-3))), rep.Verified, len(rep.Unverified))
	return rep.Err(cfg.RequireVerified)
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

func (p *progress) Add(n int64) {
	p.done.Add(n)
	if p.bar != nil {
		p.bar.Add64(n)
	}
}

func (p *progress) Finish() {
	close(p.stop)
	p.wg.Wait()
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
}
