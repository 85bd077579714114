// Package prefetch decides what to load before a reader asks for it.
//
//   - Readahead: a Stream wraps one open file, watches its reads, and when
//     they run forward (allowing for the reordering of concurrent FUSE
//     requests and small skips) asks for a window ahead of the reader that
//     doubles with each sequential read up to a cap.
//   - Plans: Plan reads safetensors (single and sharded, via
//     model.safetensors.index.json) and GGUF headers and lists the byte
//     ranges in the order a loader wants them: small files whole, then per
//     checkpoint its headers and its tensors in layer order (Order).
//   - Profiles: a Recorder notes the order blocks were first read during a
//     load; WriteProfile/ReadProfile store it (docs/profile-format.md), and
//     a replayed profile is a plan like any other.
//   - A Follower walks a plan ahead of the reader: each read that lands in
//     the plan moves the reader's position there, and the next Window bytes
//     of the plan are kept requested, each range once. Until a second big
//     file is read the window stays within the files read, so reading one
//     file fetches that file and no other.
//
// Headers and indexes are parsed by modelformat, which bounds what each
// costs (streamed, every count and length checked, the fuzz targets
// assert allocation within a small multiple of the header's size). The
// planner keeps only each tensor's name and range, and bounds the rest:
//
//   - A header is at most PlanOptions.MaxHeader bytes, by default the
//     safetensors reference implementation's 100 MB.
//   - What one Plan keeps of all its files' tensors is at most
//     PlanOptions.MaxKept.
//   - Headers are parsed at most PlanOptions.Parallel at a time, and within
//     a HeaderBudget of header bytes that a mount shares across its models.
//
// prefetch does no I/O of its own: it reads headers through the ReaderAt a
// File opens and loads through the Blocks and FileBlocks interfaces it
// declares, which the block cache satisfies. The cache, not this package,
// guarantees that prefetch never evicts pinned or unread blocks and comes
// after demand reads.
package prefetch
