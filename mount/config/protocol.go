package config

// What a modelfs process prints for the programs that start it (the CSI
// plugin, tests, benchmarks).
const (
	// ReadyPrefix starts the line a mount prints on stdout once the
	// filesystem answers.
	ReadyPrefix = "ready: "
	// ErrorPrefix starts the one line on stderr a failing command prints
	// before it exits non-zero.
	ErrorPrefix = "modelfs: "
	// SourceEnv holds SOURCE when it is left off the command line: the
	// environment, unlike argv, is not readable by every user, so a URL
	// with a signature or token belongs there.
	SourceEnv = "MODELFS_SOURCE"
)
