package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/mount/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	app := &cli.App{
		Name:                 "modelfs",
		Usage:                "stream model weights from S3, HTTP(S) or a directory as a local read-only filesystem",
		Version:              version,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"MODELFS_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: []string{"MODELFS_LOG_FORMAT"}},
		},
		// Before every command: check the log flags once, so a bad value is
		// one line whatever the command, and size the Go heap to the cgroup.
		Before: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			applyMemoryLimit(log, 0, 0)
			return nil
		},
		Commands:     []*cli.Command{mountCommand(), unmountCommand(), warmCommand(), packCommand(), statsCommand(), cacheCommand(), gpuwarmCommand(), csiCommand(), completionCommand(), versionCommand()},
		Action:       unknownCommand,
		OnUsageError: onUsageError,
		// One line, no usage dump, for errors a user caused.
		ExitErrHandler: func(c *cli.Context, err error) {},
	}
	oneLineUsageErrors(app.Commands)
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "%s%v\n", config.ErrorPrefix, err)
		os.Exit(exitCode(err))
	}
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToLower(c.String("log-level")))); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f := strings.ToLower(c.String("log-format")); f {
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, usagef("--log-format %q: want text or json", c.String("log-format"))
	}
}
