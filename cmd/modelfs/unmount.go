package main

import (
	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/internal/mountinfo"
)

func unmountCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "unmount a modelfs mount, including a stale one whose process died",
		ArgsUsage: "MOUNTPOINT",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("unmount: want exactly one argument, MOUNTPOINT")
			}
			return mountinfo.Unmount(c.Args().First())
		},
	}
}
