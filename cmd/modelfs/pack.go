package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/fetch/pack/publish"
)

func packCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return &cli.Command{
		Name:      "pack",
		Usage:     "store a model directory compressed, for mounts to serve as the original files",
		ArgsUsage: "SRC_DIR DEST   |   --verify [SRC_DIR] DEST",
		Description: `DEST is a local directory, s3://bucket/prefix, az://account/container/prefix
or gs://bucket/prefix, reached with the credentials a mount of it uses. Each file of SRC_DIR of at
least --copy-below bytes is written as NAME.mfpack: frames of --frame-size
bytes of the original, each compressed on its own, with bf16/fp16 tensors
of safetensors and GGUF files byte-grouped first, plus an index. Smaller
files (config, tokenizer config) are copied as they are. A mount of DEST
shows every file under its original name, size and content.

With --verify nothing is written: every file of DEST is read back through
the decoder and its sha256 compared with the one its pack records and, when
SRC_DIR is given, with the original's.`,
		Flags: append(packSourceFlags(),
			&cli.StringFlag{Name: "frame-size", Value: "4MiB", Usage: "span of the original each frame covers (64KiB to 64MiB); a divisor of the mount's --block-size keeps block reads frame-aligned", EnvVars: env("FRAME_SIZE")},
			&cli.StringFlag{Name: "copy-below", Value: "64KiB", Usage: "copy files smaller than this as they are", EnvVars: env("COPY_BELOW")},
			&cli.BoolFlag{Name: "verify", Usage: "check DEST against the recorded sha256s (and SRC_DIR's files) instead of packing"},
		),
		Action: runPack,
	}
}

// packSourceFlags are the source flags that apply to reading and writing
// DEST; the cache flags do not.
func packSourceFlags() []cli.Flag {
	keep := map[string]bool{"region": true, "endpoint": true, "aws-profile": true, "no-sign-request": true,
		"concurrency": true, "request-timeout": true, "retries": true}
	var out []cli.Flag
	for _, f := range sourceFlags() {
		if keep[f.Names()[0]] {
			out = append(out, f)
		}
	}
	return out
}

func runPack(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if c.Int("concurrency") < 1 || c.Int("concurrency") > 1024 {
		return fmt.Errorf("pack: --concurrency %d: want 1 to 1024", c.Int("concurrency"))
	}
	cfg := publish.Config{
		S3: fetch.S3ClientOptions{
			Region: c.String("region"), Endpoint: c.String("endpoint"), Profile: c.String("aws-profile"),
			NoSignRequest: c.Bool("no-sign-request"), Logger: log,
		},
		Retry:       fetch.RetryOptions{MaxAttempts: c.Int("retries"), AttemptTimeout: c.Duration("request-timeout")},
		Concurrency: c.Int("concurrency"),
		Logger:      log,
		Out:         os.Stdout,
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if c.Bool("verify") {
		switch c.NArg() {
		case 1:
			return publish.Verify(ctx, "", c.Args().Get(0), cfg)
		case 2:
			return publish.Verify(ctx, c.Args().Get(0), c.Args().Get(1), cfg)
		}
		return usagef("pack --verify: want [SRC_DIR] DEST (got %d arguments)", c.NArg())
	}
	if c.NArg() != 2 {
		return usagef("pack: want two arguments, SRC_DIR and DEST (got %d)", c.NArg())
	}
	if cfg.FrameSize, err = parseSize(c.String("frame-size"), "--frame-size"); err != nil {
		return err
	}
	if cfg.FrameSize < pack.MinFrameSize || cfg.FrameSize > pack.MaxFrameSize {
		return fmt.Errorf("pack: --frame-size %s: want 64KiB to 64MiB", c.String("frame-size"))
	}
	if cfg.CopyBelow, err = parseSize(c.String("copy-below"), "--copy-below"); err != nil {
		return err
	}
	return publish.Pack(ctx, c.Args().Get(0), c.Args().Get(1), cfg)
}
