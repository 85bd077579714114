// Package config is the typed, validated settings of a modelfs mount and
// of warm: what the command-line flags (and their MODELFS_* environment
// twins) set, and what the CSI plugin asks a mount for.
//
// It is a leaf apart from the engine (package mount) so that the CSI
// plugin, which starts mounts as processes, can build a Config and render
// its command line with Args without importing fs or blockcache. It also
// declares what those processes print that others read: the ready line
// and the error prefix.
//
// Invariants: a Config holds references to secrets (the name of an
// environment variable, an AWS profile), never their values, so Args and
// errors can be shown; Validate is the one place settings are checked.
package config
