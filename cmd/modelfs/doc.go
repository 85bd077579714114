// Command modelfs mounts remote model weights as a local read-only
// filesystem that streams bytes on demand.
//
// This package is the composition root: one file per command, turning
// flags (each with a MODELFS_* environment twin) into a validated
// mount/config.Config and handing it to the engine, package mount, which
// wires fetch -> blockcache -> prefetch -> fs.
package main
