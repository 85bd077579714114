package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/internal/units"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case errors.Is(err, errReported):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg.Log = os.Stdout
	rep, err := Run(ctx, cfg)
	if rep != nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	if len(rep.Failures) > 0 {
		fmt.Fprintf(os.Stderr, "soak: FAILED (%d problems, listed above)\n", len(rep.Failures))
		os.Exit(1)
	}
	fmt.Println("soak: PASS")
}

// errReported is a flag error the flag package has already printed.
var errReported = errors.New("bad flags")

// parseFlags turns the command line into a Config.
func parseFlags(args []string, errOut io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.StringVar(&c.Modelfs, "modelfs", c.Modelfs, "the modelfs binary")
	fs.StringVar(&c.Mmapread, "mmapread", c.Mmapread, "the tests/cmd/mmapread binary (mmap reads in child processes)")
	fs.StringVar(&c.Dir, "dir", "", "work directory for models, the store, cache and mountpoints (default: a temporary one, removed at the end)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long the readers read")
	fs.IntVar(&c.Readers, "readers", c.Readers, "concurrent readers, all models together")
	fs.IntVar(&c.MmapReaders, "mmap-readers", c.MmapReaders, "how many of the readers run mmapread children instead of preads")
	fs.Float64Var(&c.FaultRate, "fault-rate", c.FaultRate, "share of ranged GETs that get an injected fault")
	fs.IntVar(&c.Retries, "retries", c.Retries, "modelfs --retries")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", c.RequestTimeout, "modelfs --request-timeout")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "modelfs --concurrency")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the models and of the readers' and faults' choices")
	fs.DurationVar(&c.Progress, "progress", c.Progress, "how often to print a progress line")
	sizes := fs.String("sizes", joinSizes(c.Sizes), "comma-separated model sizes, one model each")
	blockSize := fs.String("block-size", fmtSize(c.BlockSize), "modelfs --block-size")
	memCache := fs.String("mem-cache", fmtSize(c.MemCache), "modelfs --mem-cache, per mount")
	cacheSize := fs.String("cache-size", "auto", "modelfs --cache-size of the shared disk cache (auto: a quarter of all models)")
	maxRead := fs.String("max-read", fmtSize(c.MaxRead), "largest pread")
	rssBase := fs.String("rss-base", fmtSize(c.RSSBase), "RSS a mount may use beyond its block caches and FUSE buffers (code, Go runtime, SDK)")
	mountFlags := fs.String("mount-flags", "", "more modelfs mount flags, space-separated, e.g. \"--pprof --prefetch readahead\"")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, errReported
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.Sizes = nil
	for s := range strings.SplitSeq(*sizes, ",") {
		n, err := parseSize(s)
		if err != nil {
			return c, fmt.Errorf("-sizes: %w", err)
		}
		c.Sizes = append(c.Sizes, n)
	}
	for _, f := range []struct {
		name string
		val  string
		dst  *int64
	}{{"-block-size", *blockSize, &c.BlockSize}, {"-mem-cache", *memCache, &c.MemCache}, {"-max-read", *maxRead, &c.MaxRead}, {"-rss-base", *rssBase, &c.RSSBase}} {
		n, err := parseSize(f.val)
		if err != nil {
			return c, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.dst = n
	}
	c.MountFlags = strings.Fields(*mountFlags)
	c.DiskCache = 0
	if *cacheSize != "auto" {
		n, err := parseSize(*cacheSize)
		if err != nil {
			return c, fmt.Errorf("-cache-size: %w", err)
		}
		c.DiskCache = n
	}
	return c, c.validate()
}

// parseSize reads sizes like 192MiB, 1.5GiB or 4096, as modelfs's own
// flags do; the soak wants them positive and below 32 TiB.
func parseSize(s string) (int64, error) {
	n, err := units.ParseSize(s, "size")
	if err == nil && (n <= 0 || n > 1<<45) {
		return 0, fmt.Errorf("size %q: want more than 0 and at most 32TiB", s)
	}
	return n, err
}

// fmtSize writes n the way modelfs's flags read it.
func fmtSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

func joinSizes(sizes []int64) string {
	s := make([]string, len(sizes))
	for i, n := range sizes {
		s[i] = fmtSize(n)
	}
	return strings.Join(s, ",")
}

// mib formats a byte count for the report.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// since is a duration for progress lines, in whole seconds.
func since(t time.Time) time.Duration { return time.Since(t).Round(time.Second) }
