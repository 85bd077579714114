// Package mount is the engine of a modelfs mount and of warm: it opens
// and lists the sources of a config.Config (falling back to a listing
// saved in the cache dir only when a source cannot be reached), builds
// the one block cache in front of them with the loader and the store
// verifier, attaches the prefetcher (readahead per open file, a plan per
// model, profiles), and hands fs the files with the Openers that read
// through them. It also owns the manifests of several models and the
// mount's observability snapshot (the stats file, the Prometheus
// collectors, the unmount log line).
//
// Settings arrive typed and validated (package mount/config, kept apart so
// the CSI plugin can render a mount's command line without importing fs
// or blockcache); this package parses no flags. Errors are wrapped with
// context and become errno only in fs.
package mount
