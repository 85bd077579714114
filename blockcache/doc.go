// Package blockcache serves reads of remote objects from fixed-size blocks
// held in memory, loading missing blocks through a Loader it declares.
//
// Invariants:
//   - A block is keyed by its object's name and pinned version, the block
//     size and its index, so a changed object can never be served from
//     blocks of an older version.
//   - Concurrent misses for one block make one load (singleflight).
//   - Demand reads are served before prefetches: loads run on a fixed pool
//     of workers that always take a waiting demand load first.
//   - The RAM tier stays within its byte budget, except for blocks that a
//     demand read needs while everything else is in use; that overshoot is
//     bounded by the number of workers times the block size.
//   - Prefetch never evicts a prefetched block nobody has read yet; when the
//     budget has no room for it, the prefetch is dropped.
//
// blockcache knows nothing of S3, file formats or FUSE.
package blockcache
