package publish

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/internal/units"
	"github.com/modelfs/modelfs/modelformat/modeldir"
)

// Config is how a store of packs is written and read. The caller
// validates it (sizes in range, Concurrency from 1 to 1024).
type Config struct {
	// S3 is how an S3 destination is reached: its region, endpoint,
	// profile and anonymous access serve reading it too. Retries are set
	// from Retry, and a nil Logger is Logger.
	S3 fetch.S3ClientOptions
	// Retry bounds reading the destination; its MaxAttempts also bounds
	// the SDK's attempts at each upload request.
	Retry fetch.RetryOptions
	// Concurrency bounds parallel reads; up to min(Concurrency, 8) parts
	// of an object are uploaded, and chunks of a file verified, at once.
	Concurrency int
	// FrameSize is the span of the original each frame covers; files
	// smaller than CopyBelow are copied as they are. Pack only.
	FrameSize, CopyBelow int64
	// Logger receives warnings (nil: slog.Default()).
	Logger *slog.Logger
	// Out receives the progress and result lines (nil: os.Stdout).
	Out io.Writer
}

func (c Config) log() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

func (c Config) out() io.Writer {
	if c.Out == nil {
		return os.Stdout
	}
	return c.Out
}

// open opens a location as a source, as a mount does, without the pack
// layer.
func (c Config) open(ctx context.Context, loc fetch.Location) (fetch.Source, error) {
	if err := c.checkApplies(loc); err != nil {
		return nil, err
	}
	return fetch.Open(ctx, loc, fetch.OpenOptions{
		S3: fetch.S3Options{
			Region: c.S3.Region, Endpoint: c.S3.Endpoint, Profile: c.S3.Profile,
			NoSignRequest: c.S3.NoSignRequest, MaxConns: c.Concurrency * 2, Logger: c.log(),
		},
		Retry: c.Retry,
	})
}

// checkApplies refuses a flag that means nothing for loc.
func (c Config) checkApplies(loc fetch.Location) error {
	return fetch.CheckApplies([]fetch.Location{loc}, fetch.S3Options{
		Region: c.S3.Region, Endpoint: c.S3.Endpoint, Profile: c.S3.Profile, NoSignRequest: c.S3.NoSignRequest,
	})
}

// SrcFile is one regular file of a model directory.
type SrcFile struct {
	Key  string // '/'-separated, relative to the directory
	Path string
	Size int64
}

// Walk lists dir's regular files by key, by modelformat's one
// model-directory walk (the mount's local source sees the same files):
// links are followed inside dir and, for a Hugging Face cache snapshot,
// into its repository's blobs/; links elsewhere are skipped, with a
// warning naming them.
func Walk(dir string, log *slog.Logger) ([]SrcFile, error) {
	d, err := modeldir.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer d.Close()
	found, skipped, err := d.Walk(context.Background())
	if err != nil {
		return nil, fmt.Errorf("pack: reading %s: %w", dir, err)
	}
	for _, s := range skipped {
		log.Warn("not packed", "file", s.Path, "reason", s.Reason)
	}
	var files []SrcFile
	for _, f := range found {
		if strings.HasSuffix(f.Path, pack.Suffix) {
			return nil, fmt.Errorf("pack: reading %s: %s: already a pack", dir, f.Path)
		}
		files = append(files, SrcFile{Key: f.Path, Path: d.FilePath(f), Size: f.Size})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("pack: %s holds no files", dir)
	}
	return files, nil
}

// Pack packs every file of srcDir into dest (a local directory or
// s3://bucket/prefix), printing a line per file and a summary to cfg.Out.
func Pack(ctx context.Context, srcDir, dest string, cfg Config) error {
	log := cfg.log()
	files, err := Walk(srcDir, log)
	if err != nil {
		return err
	}
	d, err := OpenDest(ctx, dest, srcDir, cfg)
	if err != nil {
		return err
	}
	existing, err := d.Keys(ctx)
	if err != nil {
		return err
	}

	t0 := time.Now()
	var in, out int64
	for _, f := range files {
		n, err := packFile(ctx, d, f, existing, cfg)
		if err != nil {
			return fmt.Errorf("pack %s: %w", f.Key, err)
		}
		in += f.Size
		out += n
	}
	el := time.Since(t0)
	fmt.Fprintf(cfg.out(), "packed %d files into %s: %s -> %s (%.3f) in %s, %s/s\n", len(files), d, units.FormatSize(in), units.FormatSize(out),
		float64(out)/float64(max(in, 1)), el.Round(time.Millisecond), units.FormatSize(int64(float64(in)/max(el.Seconds(), 1e-3))))
	return nil
}

// packFile packs (or copies) one file and returns the bytes written.
func packFile(ctx context.Context, dest Dest, f SrcFile, existing map[string]bool, cfg Config) (int64, error) {
	t0 := time.Now()
	r, err := os.Open(f.Path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if f.Size < cfg.CopyBelow {
		w, err := dest.Create(ctx, f.Key, f.Size)
		if err != nil {
			return 0, err
		}
		if _, err := io.Copy(w, io.NewSectionReader(r, 0, f.Size)); err != nil {
			w.Abort()
			return 0, err
		}
		if err := w.Commit(); err != nil {
			return 0, err
		}
		// A pack from an earlier run would be hidden by the plain file
		// anyway; it is this command's own output, so it goes.
		if existing[f.Key+pack.Suffix] {
			if err := dest.Remove(ctx, f.Key+pack.Suffix); err != nil {
				return 0, fmt.Errorf("removing the stale pack: %w", err)
			}
		}
		fmt.Fprintf(cfg.out(), "copied %s (%s)\n", f.Key, units.FormatSize(f.Size))
		return f.Size, nil
	}
	if existing[f.Key] {
		// Not removed: it may be anyone's. Mounts show it, not the pack.
		cfg.log().Warn("DEST holds this file unpacked too: mounts will show that copy, not the pack; delete it to serve the pack",
			"file", f.Key)
	}
	layout, err := pack.DetectLayout(f.Key, r, f.Size)
	if err != nil {
		cfg.log().Warn("packing without byte grouping: the tensor layout is unknown", "file", f.Key, "err", err)
	}
	w, err := dest.Create(ctx, f.Key+pack.Suffix, f.Size)
	if err != nil {
		return 0, err
	}
	ix, err := pack.Encode(ctx, w, r, f.Size, pack.EncodeOptions{FrameSize: cfg.FrameSize, Layout: layout})
	if err != nil {
		w.Abort()
		return 0, err
	}
	if err := w.Commit(); err != nil {
		return 0, err
	}
	n := ix.PackedSize()
	el := time.Since(t0)
	fmt.Fprintf(cfg.out(), "packed %s: %s -> %s (%.3f), %d frames, in %s, %s/s\n", f.Key, units.FormatSize(f.Size), units.FormatSize(n),
		float64(n)/float64(max(f.Size, 1)), len(ix.Frames), el.Round(time.Millisecond),
		units.FormatSize(int64(float64(f.Size)/max(el.Seconds(), 1e-3))))
	return n, nil
}
