package main

import (
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/mount"
	"github.com/modelfs/modelfs/mount/config"
)

func mountCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return &cli.Command{
		Name:        "mount",
		Usage:       "mount a remote model read-only; runs in the foreground until SIGINT/SIGTERM",
		ArgsUsage:   "SOURCE MOUNTPOINT | --manifest FILE MOUNTPOINT",
		Description: sourceHelp + "\n\n" + sourceEnvHelp + "\n\n" + manifestHelp,
		Flags: append(sourceFlags(), []cli.Flag{
			// Only the environment should set it (see sourceEnvHelp).
			&cli.StringFlag{Name: "source", Hidden: true, EnvVars: []string{config.SourceEnv}},
			&cli.StringFlag{Name: "manifest", Usage: "serve the models this JSON file names, each in a subdirectory, instead of one SOURCE", EnvVars: env("MANIFEST")},
			&cli.StringFlag{Name: "mem-cache", Value: "auto", Usage: "RAM block cache budget (auto: an eighth of memory, 256MiB to 1GiB)", EnvVars: env("MEM_CACHE")},
			&cli.StringFlag{Name: "prefetch", Value: "auto", Usage: "auto, layer, profile, readahead or off (auto: --profile if given and usable, else layer order from the model's headers; readahead always)", EnvVars: env("PREFETCH")},
			&cli.StringFlag{Name: "profile", Usage: "replay this recorded load profile at mount time", EnvVars: env("PROFILE")},
			&cli.StringFlag{Name: "record-profile", Usage: "write the order blocks were first read to this file on unmount", EnvVars: env("RECORD_PROFILE")},
			&cli.StringFlag{Name: "small-file", Value: "1MiB", Usage: "files up to this size are fetched whole on first open, and (with a plan) at mount", EnvVars: env("SMALL_FILE")},
			&cli.StringFlag{Name: "readahead", Value: "128MiB", Usage: "largest readahead window per open file", EnvVars: env("READAHEAD")},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users read the mount (needs user_allow_other for non-root)", EnvVars: env("ALLOW_OTHER")},
			&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus /metrics on this address, like 127.0.0.1:9090 (port 0: any free port, logged) or unix:/path/to.sock", EnvVars: env("METRICS_ADDR")},
			&cli.BoolFlag{Name: "pprof", Usage: "also serve /debug/pprof/ on --metrics-addr", EnvVars: env("PPROF")},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request", EnvVars: env("DEBUG_FUSE")},
		}...),
		Action: runMount,
	}
}

const sourceEnvHelp = `With MODELFS_SOURCE set, SOURCE may be left out: the environment, unlike
the command line, is not readable by every user (ps, /proc), so a URL with
a signature or token in its query belongs there.`

func runMount(c *cli.Context) error {
	cfg, err := mountCommandConfig(c)
	if err != nil {
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	// RAM cache blocks live outside the Go heap but inside the cgroup.
	// The shared cache's write-backs wait in the heap.
	applyMemoryLimit(log, cfg.MemCacheBytes(), mountHeapLimit+cfg.SharedCacheQueueBytes(cfg.MemCacheBytes()))

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e, err := mount.New(ctx, cfg, mount.Options{Logger: log, Wrap: wrapSource})
	if err != nil {
		return err
	}
	defer e.Close()
	return e.Serve(ctx)
}

// mountCommandConfig is the mount's Config from its arguments, flags and
// environment, validated.
func mountCommandConfig(c *cli.Context) (config.Config, error) {
	manifest, source := c.String("manifest"), c.String("source")
	switch {
	case manifest != "" && (c.NArg() == 2 || source != ""):
		return config.Config{}, usagef("mount: --manifest and a SOURCE are mutually exclusive")
	case manifest != "" && c.NArg() != 1:
		return config.Config{}, usagef("mount: with --manifest, want one argument, MOUNTPOINT (got %d)", c.NArg())
	case manifest != "":
		// The models are the manifest's.
	case c.NArg() == 1 && source != "":
		// The source came from MODELFS_SOURCE.
	case c.NArg() != 2:
		return config.Config{}, usagef("mount: want two arguments, SOURCE and MOUNTPOINT, or %s and MOUNTPOINT (got %d)", config.SourceEnv, c.NArg())
	default:
		source = c.Args().First()
	}
	cfg, err := mountConfig(c, source, manifest, c.Args().Get(c.NArg()-1))
	if err != nil {
		return cfg, err
	}
	return cfg, validate(&cfg)
}
