package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit statuses: a runtime failure is 1, a mistake on the command line
// (unknown command or flag, wrong arguments, a bad flag value) is 2, as
// with most Unix tools, so scripts can tell them apart.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake on the command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	// 'modelfs help TOPIC' of an unknown topic: urfave/cli's help command
	// reports it with its own exit code.
	var exit cli.ExitCoder
	if errors.As(err, &exit) && strings.HasPrefix(exit.Error(), "No help topic") {
		return exitUsage
	}
	return exitFailure
}

// oneLineUsageErrors makes every command of the tree report its command-line
// mistakes as one usageError instead of urfave/cli's help dump on stdout:
// flag parse errors, missing required flags and unknown subcommands.
func oneLineUsageErrors(cmds []*cli.Command) {
	walkUsage(cmds, map[*cli.StringFlag]bool{})
}

// walkUsage does oneLineUsageErrors' work; required holds the flags made
// optional so far, since commands share flag values.
func walkUsage(cmds []*cli.Command, required map[*cli.StringFlag]bool) {
	for _, cmd := range cmds {
		cmd.OnUsageError = onUsageError
		requireFlags(cmd, required)
		if len(cmd.Subcommands) > 0 && cmd.Action == nil {
			cmd.Action = unknownCommand
		}
		walkUsage(cmd.Subcommands, required)
	}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	// Go's flag package names flags with one dash; ours are documented with two.
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + strings.TrimPrefix(name, "-")
	} else if flag, val, why, ok := invalidValue(msg); ok {
		msg = fmt.Sprintf("--%s %s: %s", flag, val, why)
	}
	return usagef("%s (see '%s --help')", msg, helpName(c))
}

// invalidValue splits the flag package's message for a value it cannot
// parse: invalid value "VAL" for flag -NAME: WHY.
func invalidValue(msg string) (flag, val, why string, ok bool) {
	rest, ok := strings.CutPrefix(msg, "invalid value ")
	if !ok {
		return "", "", "", false
	}
	val, rest, ok = strings.Cut(rest, " for flag -")
	if !ok {
		return "", "", "", false
	}
	flag, why, ok = strings.Cut(rest, ": ")
	return flag, val, why, ok
}

// unknownCommand is the action of a command that only groups others (and
// of the app): no argument shows the help, anything else is a mistake.
func unknownCommand(c *cli.Context) error {
	if c.NArg() == 0 {
		return cli.ShowSubcommandHelp(c)
	}
	return usagef("unknown command %q (see '%s --help')", c.Args().First(), helpName(c))
}

func helpName(c *cli.Context) string {
	if c.Command != nil && c.Command.HelpName != "" {
		return c.Command.HelpName
	}
	return c.App.Name
}

// requireFlags checks the command's required flags itself, before its
// action: urfave/cli would print the whole help for a missing one.
func requireFlags(cmd *cli.Command, seen map[*cli.StringFlag]bool) {
	var required []string
	for _, f := range cmd.Flags {
		if sf, ok := f.(*cli.StringFlag); ok && (sf.Required || seen[sf]) {
			seen[sf], sf.Required = true, false
			required = append(required, sf.Name)
		}
	}
	if len(required) == 0 {
		return
	}
	before := cmd.Before
	cmd.Before = func(c *cli.Context) error {
		for _, name := range required {
			if !c.IsSet(name) {
				return usagef("%s: --%s is required (see '%s --help')", strings.TrimPrefix(helpName(c), c.App.Name+" "), name, helpName(c))
			}
		}
		if before != nil {
			return before(c)
		}
		return nil
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("version: want no arguments")
			}
			cli.ShowVersion(c)
			return nil
		},
	}
}
