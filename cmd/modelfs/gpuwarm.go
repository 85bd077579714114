package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/gpuwarm"
)

// gpuwarmNVML returns the NVML gpuwarm uses; tests swap in go-nvml mocks.
var gpuwarmNVML = gpuwarm.NewNVML

func gpuwarmCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_GPUWARM_" + name} }
	printEnv := &envFormat{}
	return &cli.Command{
		Name:  "gpuwarm",
		Usage: "check the GPUs, lock the model's first-read bytes in memory and report ready (init container or sidecar)",
		Description: `gpuwarm --model DIR (usually a modelfs mount) gets a GPU node ready for an
inference server: it lists the GPUs through NVML (names, UUIDs, memory,
driver, persistence mode, ECC and retired-page health), checks that the
tensors in the model's safetensors/GGUF headers, split over
--tensor-parallel GPUs, fit in --gpu-mem-fraction of each one's free memory,
and locks (mmap + mlock) the first --pin-bytes of the order the server reads
the model in (--profile, else layer order) into the page cache.

When all that is done it prints one JSON report (phase timings included),
writes --ready-file and turns --listen's /readyz to 200. With --once it then
exits; otherwise it holds the pins, serving /readyz, /livez and /metrics,
until SIGINT/SIGTERM. Without an NVIDIA driver the GPU checks are skipped
(one log line) unless --require-gpu.

When the model is in a modelfs mount, a file that failed its store's
checksum makes it not ready (exit 1 with --once), naming the file; with
--require-verified so does one not verified yet or without a checksum, and
a model directory that is not in a modelfs mount.

With --warmup-url (an OpenAI-compatible /v1/completions), it waits for the
server's health, sends each --warmup-shapes batch --warmup-iters times and
reports first against stable latency before it reports ready.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "model directory, usually a modelfs mount (required)", EnvVars: env("MODEL")},
			&cli.IntFlag{Name: "tensor-parallel", Value: 1, Usage: "GPUs the tensors are split over: the first N are checked", EnvVars: env("TENSOR_PARALLEL")},
			&cli.Float64Flag{Name: "gpu-mem-fraction", Value: 0.9, Usage: "part of each GPU's free memory the tensors may take", EnvVars: env("GPU_MEM_FRACTION")},
			&cli.BoolFlag{Name: "enable-persistence", Usage: "turn GPU persistence mode on where permitted", EnvVars: env("ENABLE_PERSISTENCE")},
			&cli.BoolFlag{Name: "require-gpu", Usage: "fail when there is no NVIDIA driver or GPU", EnvVars: env("REQUIRE_GPU")},
			&cli.BoolFlag{Name: "require-verified", Usage: "not ready unless the modelfs mount serving the model verified every file against its store's checksum (a failed file always makes it not ready)", EnvVars: env("REQUIRE_VERIFIED")},
			&cli.StringFlag{Name: "pin-bytes", Value: "0", Usage: "how much of the load order to lock in memory: a size like 4GiB, or all (0: none)", EnvVars: env("PIN_BYTES")},
			&cli.StringFlag{Name: "profile", Usage: "pin in the order of this recorded load profile (default: layer order from the headers)", EnvVars: env("PROFILE")},
			&cli.GenericFlag{Name: "print-env", Value: printEnv, Usage: "print the environment the inference server should start with, as shell exports (--print-env=json for JSON), and exit", EnvVars: env("PRINT_ENV")},
			&cli.StringFlag{Name: "listen", Usage: "serve /readyz, /livez and /metrics on this address, like :9400", EnvVars: env("LISTEN")},
			&cli.StringFlag{Name: "ready-file", Usage: "write the JSON report to this file (atomically) once ready", EnvVars: env("READY_FILE")},
			&cli.BoolFlag{Name: "once", Usage: "exit once ready (0) or failed (1) instead of holding the pins", EnvVars: env("ONCE")},
			&cli.StringFlag{Name: "warmup-url", Usage: "warm up this OpenAI-compatible completions endpoint, like http://127.0.0.1:8000/v1/completions", EnvVars: env("WARMUP_URL")},
			&cli.StringFlag{Name: "health-url", Usage: "wait for this to answer 200 before warming up (default: the warm-up URL's host + /health)", EnvVars: env("HEALTH_URL")},
			&cli.DurationFlag{Name: "warmup-timeout", Value: 10 * time.Minute, Usage: "limit for the whole warm-up, waiting for health included", EnvVars: env("WARMUP_TIMEOUT")},
			&cli.StringFlag{Name: "warmup-shapes", Value: "1x128", Usage: "batches to send, as BATCHxPROMPT_TOKENS, comma-separated", EnvVars: env("WARMUP_SHAPES")},
			&cli.IntFlag{Name: "warmup-iters", Value: 3, Usage: "batches per shape: the first is the warm-up, the median of the rest is stable", EnvVars: env("WARMUP_ITERS")},
			&cli.StringFlag{Name: "warmup-model", Usage: "model name for the requests (default: the first /v1/models lists)", EnvVars: env("WARMUP_MODEL")},
			&cli.IntFlag{Name: "warmup-max-tokens", Value: 8, Usage: "tokens to generate per warm-up request", EnvVars: env("WARMUP_MAX_TOKENS")},
			&cli.DurationFlag{Name: "keep-warm", Usage: "after ready, send one small request at this interval (needs --warmup-url, not --once)", EnvVars: env("KEEP_WARM")},
		},
		Action: func(c *cli.Context) error { return runGPUWarm(c, printEnv.format) },
	}
}

// envFormat is --print-env: a flag that may go without a value (shell) or
// take one (--print-env=json).
type envFormat struct{ format string }

func (f *envFormat) Set(v string) error {
	switch strings.ToLower(v) {
	case "true", "shell":
		f.format = "shell"
	case "json":
		f.format = "json"
	case "false", "":
		f.format = ""
	default:
		return fmt.Errorf("want shell or json")
	}
	return nil
}

func (f *envFormat) String() string   { return f.format }
func (f *envFormat) IsBoolFlag() bool { return true }

func runGPUWarm(c *cli.Context, printEnv string) error {
	if c.NArg() > 0 {
		return usagef("gpuwarm: unexpected argument %q (the model is --model DIR; JSON environment is --print-env=json)", c.Args().First())
	}
	if printEnv != "" {
		return gpuwarm.WriteEnv(c.App.Writer, gpuwarm.ServerEnv(), printEnv)
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	opts, keepWarm, err := gpuwarmOptions(c)
	if err != nil {
		return err
	}
	opts.Log = log
	once := c.Bool("once")

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	w := gpuwarm.New(opts)
	var listen string
	if addr := c.String("listen"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		listen = ln.Addr().String()
		srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		log.Info("serving /readyz, /livez and /metrics", "addr", listen)
	}

	rep, err := w.Run(ctx)
	if err != nil {
		cerr := w.Close()
		if ctx.Err() != nil && c.Context.Err() == nil && !once {
			// SIGINT/SIGTERM before ready: a normal stop for a sidecar.
			log.Info("interrupted before ready")
			return cerr
		}
		return fmt.Errorf("gpuwarm: %w", errors.Join(err, cerr))
	}
	out := struct {
		*gpuwarm.Report
		Listen string `json:"listen,omitempty"`
	}{rep, listen}
	if err := gpuwarm.WriteJSON(c.App.Writer, out); err != nil {
		w.Close()
		return fmt.Errorf("gpuwarm: writing the report: %w", err)
	}
	if once {
		return w.Close()
	}
	log.Info("ready: holding the pins until SIGINT/SIGTERM")
	if keepWarm > 0 {
		go w.KeepWarm(ctx, keepWarm)
	}
	<-ctx.Done()
	w.Unready()
	if err := w.Close(); err != nil {
		return fmt.Errorf("gpuwarm: %w", err)
	}
	log.Info("pins released")
	return nil
}

// gpuwarmOptions turns the flags into gpuwarm.Options and the keep-warm
// interval.
func gpuwarmOptions(c *cli.Context) (gpuwarm.Options, time.Duration, error) {
	o := gpuwarm.Options{
		Model:             c.String("model"),
		RequireGPU:        c.Bool("require-gpu"),
		RequireVerified:   c.Bool("require-verified"),
		EnablePersistence: c.Bool("enable-persistence"),
		TensorParallel:    c.Int("tensor-parallel"),
		GPUMemFraction:    c.Float64("gpu-mem-fraction"),
		Profile:           c.String("profile"),
		ReadyFile:         c.String("ready-file"),
		NVML:              gpuwarmNVML(),
	}
	if o.Model == "" {
		return o, 0, usagef("gpuwarm: --model DIR is required")
	}
	if o.TensorParallel < 1 {
		return o, 0, usagef("--tensor-parallel %d: want at least 1", o.TensorParallel)
	}
	if f := o.GPUMemFraction; !(f > 0 && f <= 1) {
		return o, 0, usagef("--gpu-mem-fraction %g: want more than 0 and at most 1", f)
	}
	if s := c.String("pin-bytes"); strings.EqualFold(strings.TrimSpace(s), "all") {
		o.PinBytes = gpuwarm.PinAll
	} else {
		n, err := parseSize(s, "--pin-bytes")
		if err != nil {
			return o, 0, usagef("--pin-bytes %q: want a size such as 4GiB, or all", s)
		}
		o.PinBytes = n
	}
	keepWarm := c.Duration("keep-warm")
	if u := c.String("warmup-url"); u != "" {
		shapes, err := gpuwarm.ParseShapes(c.String("warmup-shapes"))
		if err != nil {
			return o, 0, usagef("--warmup-shapes: %w", err)
		}
		if c.Int("warmup-iters") < 1 {
			return o, 0, usagef("--warmup-iters %d: want at least 1", c.Int("warmup-iters"))
		}
		o.Warmup = &gpuwarm.WarmupOptions{
			URL: u, HealthURL: c.String("health-url"), Timeout: c.Duration("warmup-timeout"),
			Shapes: shapes, Iters: c.Int("warmup-iters"), Model: c.String("warmup-model"),
			MaxTokens: c.Int("warmup-max-tokens"),
		}
	}
	switch {
	case keepWarm < 0:
		return o, 0, usagef("--keep-warm %s: want a positive interval", keepWarm)
	case keepWarm > 0 && o.Warmup == nil:
		return o, 0, usagef("--keep-warm needs --warmup-url")
	case keepWarm > 0 && c.Bool("once"):
		return o, 0, usagef("--keep-warm needs the holding mode: drop --once")
	}
	return o, keepWarm, nil
}
