// Package mountproc starts, waits for, measures and stops filesystem
// daemons for the tests, the benchmark, the soak and the demo: a
// `modelfs mount` (ready once it prints config.ReadyPrefix on stdout;
// config.ErrorPrefix starts the line it prints on stderr when it fails)
// or another FUSE daemon (ready once its mountpoint is in the mount
// table). It also says whether FUSE mounts can run here at all, and maps
// files read-only so that a page a mount cannot fill (SIGBUS) comes back
// as an error.
//
// Invariants: every wait is bounded in time; a process that cannot be
// stopped cleanly is killed and its mountpoint detached, so a failed run
// leaves no mount behind. Only tests/ imports it.
package mountproc
