// Package fs presents a fixed set of remote files as a read-only FUSE
// filesystem (go-fuse, imported as fusefs).
//
// The tree is built once, at mount time, from the file list: directories
// come from '/'-separated path prefixes. Paths are validated segment by
// segment, so nothing can name a place outside the mount root; entries that
// are unsafe or conflict (a key that is both a file and a directory) are
// skipped and reported.
//
// Content is immutable while mounted, so the kernel is told to keep its page
// cache across opens and to cache entries and attributes for long.
// Every write-like operation fails with EROFS. Errors from reads are logged
// with file and offset and mapped to errno here, and only here.
//
// With Options.Snapshot set, the root also holds a hidden read-only file,
// StatsName, that lookups find and Readdir does not list; each open of it
// serves what Snapshot returns then, with direct I/O. An Observer, if
// given, is told operation latencies and each file's time to first byte.
//
// fs holds no caching or fetching policy: reads go to the Opener each file
// carries.
package fs
