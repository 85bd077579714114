// Package prefetch decides what to load before a reader asks for it.
//
// Today it holds adaptive readahead: a Stream wraps one open file, watches
// its reads, and when they run forward (allowing for the reordering of
// concurrent FUSE requests and small skips) asks the cache to load a window
// ahead of the reader that doubles with each sequential read up to a cap.
//
// prefetch does no I/O of its own: it calls the Blocks interface it
// declares, which the block cache satisfies.
package prefetch
