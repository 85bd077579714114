package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
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
		},
		Commands: []*cli.Command{mountCommand(), unmountCommand(), warmCommand(), cacheCommand(), gpuwarmCommand()},
		// One line, no usage dump, for errors a user caused.
		ExitErrHandler: func(c *cli.Context, err error) {},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "modelfs: %v\n", err)
		os.Exit(1)
	}
}

// newLogger builds the process logger from --log-level.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToLower(c.String("log-level")))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}
