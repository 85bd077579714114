// Package prefetch decides what to load before a reader asks for it.
//
//   - Readahead: a Stream wraps one open file, watches its reads, and when
//     they run forward (allowing for the reordering of concurrent FUSE
//     requests and small skips) asks for a window ahead of the reader that
//     doubles with each sequential read up to a cap. Given a Bounder (the
//     file's tensor ends), the window stops a little past the end of the
//     tensor the run started in, as far as the kernel's own readahead
//     reads anyway, until the reader goes on beyond: a reader of one
//     tensor costs that tensor.
//   - Plans and profiles: the order a loader reads a model in, from its
//     headers or a recorded load, is modelformat/loadorder's (Plan,
//     ReadProfile, Range, Entry); this package follows those plans and
//     records profiles: a Recorder notes the order blocks were first read
//     during a load, and a replayed profile is a plan like any other.
//   - A Follower walks a plan ahead of the reader: each read that lands in
//     the plan moves the reader's position there, and the next Window bytes
//     of the plan are kept requested, each range once. Until a second big
//     file is read the window stays within the files read, so reading one
//     file fetches that file and no other, and in each file it starts at
//     StartWindow and grows as the reader moves through the file's plan,
//     so reading one tensor fetches about that tensor.
//
// prefetch does no I/O of its own: it loads through the Blocks and
// FileBlocks interfaces it declares, which the block cache satisfies. The cache, not this package,
// guarantees that prefetch never evicts pinned or unread blocks and comes
// after demand reads.
package prefetch
