// Package blockcache serves reads of remote objects from fixed-size blocks
// held in RAM and, optionally, on local disk, loading missing blocks
// through a Loader it declares.
//
// Invariants:
//   - A block is keyed by its object's source (the full remote identity:
//     scheme, endpoint or host, bucket, key), name and pinned version, the
//     block size and its index, so a changed object can never be served
//     from blocks of an older version, nor an object from blocks another
//     source fetched under the same name, version and size.
//   - Concurrent misses for one block make one load (singleflight).
//   - Demand reads are served before prefetches: loads run on a fixed pool
//     of workers that always take a waiting demand load first (of the
//     groups under their limit, below), and prefetches never hold the last
//     quarter of the workers, so a demand miss starts its load at once.
//   - Prefetch skips blocks a reader was already served from: if RAM
//     dropped them, the reader's page cache most likely still has them,
//     the source must not send them again, and a disk tier need not read
//     them back into buffers nobody reads.
//   - Loads are shared fairly between groups (ObjectID.Group: a mount's
//     models). A group with loads under way takes another worker only
//     while one stays free for every other group that has none (at most
//     Workers/2 are held back this way), and a free worker takes the
//     waiting load (demand first) of the group with the fewest under way.
//     So however many groups' sources stall, every other group can always
//     start a load: its demand never waits on a stalled source. With a
//     single group, every worker serves it in FIFO order.
//   - The RAM tier stays within its byte budget, except for blocks that a
//     demand read needs while everything else is in use; that overshoot is
//     bounded by the number of workers times the block size. Block memory
//     is mapped outside the Go heap, so the budget is what the process holds.
//   - Prefetch never evicts a prefetched block nobody has read yet, nor a
//     pinned one; when the budget has no room for it, the prefetch is dropped.
//   - Prefetch runs only so far ahead of readers: the bytes of prefetch
//     loads under way or not read yet stay within a bound, up to the
//     budget, that is the larger of what the link needs in flight (twice
//     the highest recent delivery rate times the shortest whole-block
//     load seen: its bandwidth-delay product) and 32 MiB doubled each
//     time a reader reaches a prefetch held queued while the bound is
//     full (reading in another order than the plan's). So a reader the
//     source keeps up with cycles through a few buffers instead of
//     first-touching a window's worth; held prefetches stay queued, never
//     dropped, and a reader that reaches one turns it into a demand load.
//   - A load lands in used memory before fresh: the buffer of a block
//     whose every page was served to a reader (consumed) is reused first,
//     since the reader's page cache, and a disk tier, hold those bytes,
//     and filling fresh pages costs more than fetching (docs/benchmarks.md,
//     "Cold path"). Blocks read in part stay under plain LRU, and so do
//     consumed blocks an ordered store check has not hashed yet while
//     only RAM holds them; LRU eviction takes those last, since dropping
//     one costs a second fetch.
//   - No byte from disk reaches a reader unverified: every block read from
//     the disk tier is checked against the 64-bit sum recorded when it was
//     written: the CRC64NVME its object's check took of it where the store
//     checks with one (BlockCRC; S3's default), else an xxhash64. A
//     mismatch or short block is dropped and fetched again.
//   - Whole objects are checked against their store (Options.Verifier,
//     declared here, implemented by the command that knows the stores):
//     each block is shown to the object's check once, as a load (demand,
//     prefetch or Fill) brings it, and the load that completes the object
//     runs the check before it publishes its block. Order-free checks
//     (CRCs) sum blocks as they come. Ordered ones (SHA, MD5, composite,
//     multipart ETags) are fed as the loaded prefix of the object grows:
//     one goroutine at a time hashes the next block once it is published
//     (off its readers' path) and carries on over the blocks after it that
//     are still in RAM or on disk, so a sequential or layer-order load is
//     hashed as it goes, in a RAM tier far smaller than the object. The
//     state kept per object is the hash and an xxhash64 of each block
//     loaded ahead of it, never block bytes. A block dropped before the
//     hash reached it is read back from disk or fetched again, and must
//     match its xxhash64, so the hash covers exactly the bytes served;
//     otherwise the object fails. A mismatch fails that load and every
//     later read of the object (ErrCorrupt), and drops its blocks from RAM
//     and disk, so a reader of a damaged object never reaches a clean EOF.
//     An object with no check, or whose check could not run, is
//     Unverified, never Verified. The outcome lives for the cache's life,
//     not on disk: a new process checks a complete disk object again (from
//     its file, before passthrough), unless a stamp shows it unchanged
//     since it passed.
//
// Disk format. One sparse data file per object, with block i at offset
// i*blockSize, plus a meta file of fixed 16-byte per-block records (sum,
// a state word that says which sum, and a check word tied to the block's index); a record is written
// after its data, so it is the atomic commit point, and a process killed in
// between leaves a block that reads as absent. Eviction punches holes and
// clears records. Blocks are written and read with direct I/O where the
// file system allows it: a buffered write costs a fresh page-cache page
// per 4 KiB, as much CPU as the fetch; buffered readers (the kernel,
// through passthrough) still see every byte written. The alternative, one file per block, is simpler to evict
// but can never be handed to the kernel: with one file per object, an
// object complete on disk is served by FUSE passthrough (Linux 6.9+, root)
// at the speed of a local file, which decided it (numbers in
// docs/benchmarks.md). The kernel reads a passthrough file unchecked, so
// it is handed out only after a full verification, remembered by a stamp
// of the file's inode, size and ctime (an object this process wrote whole,
// each write starting from the stamp its previous one left, is stamped at
// once: every block was hashed from the bytes written), and after the
// object passed its
// store's check (or has none), and while it is open a shared flock
// on the object's pin file keeps every process sharing the directory from
// evicting it.
//
// Sharing. Several processes may use one directory: objects are created
// with an atomic link of a complete meta file, blocks are verified on every
// read, and the processes take an exclusive flock on the directory's lock
// file to evict (released by the kernel if the holder dies). Eviction is
// LRU over blocks; across processes the order falls back to each object's
// last use (the meta file's mtime). LRU rather than something cleverer
// because model loads are scans: what was loaded last is what the next
// start of the same model wants.
//
// Tenants. One directory may serve many tenants' mounts, so what a mount
// must prove before it serves cached bytes is decided here, and enforced
// by the command that lists sources:
//   - An object's blocks are found only under its full identity (Source
//     above), which names the source without secrets.
//   - A mount serves an object's cached bytes only after listing the
//     source with its own credentials. The one exception is an outage:
//     when the source cannot be reached at all (connection refused, DNS,
//     timeouts, server errors after the retries), the listing the last
//     mount saved is used. Refused credentials (HTTP 401/403, S3
//     AccessDenied and kin: fetch.ErrAccess), and credentials that could
//     not be found, even for a network error on the way (an instance
//     metadata service), are answers, never outages: that mount serves
//     nothing. What stays open: during a real outage, a process that can
//     run mounts on the node and names the same source reads its cached
//     bytes; keep a cache directory to mounts that trust each other, or
//     mounts that do not trust each other on separate directories.
//   - Files are 0600 and directories 0700, whatever the umask.
//
// Robustness. Every size read from an ObjectID or a header is bounded
// before anything is allocated or created from it (at most 2^26 records
// per object, records read 64 KiB at a time, holes skipped): a larger
// object is served from RAM and the source, a damaged or absurd entry is
// dropped with a log line, also by the operator commands. A write that
// fails for one object (EFBIG, EIO) stops disk caching of that object
// only. A full or read-only directory pauses write-back, logged once,
// until eviction frees room or a backoff (1 s doubling to 1 min) passes.
// A directory deleted or replaced under a running cache, or an object
// removed by another process, is noticed before the next write, logged,
// and recreated, never written into deleted files; an object forgotten (or
// dropped) while its files are being read or written keeps them open until
// the last of those ends, and a block written meanwhile counts for
// nothing. The tier's lock is held to reserve room and publish an entry,
// never through a block's write: hits and other objects' write-backs go on
// meanwhile (a hit on the block being written, or a second write of it,
// waits for that write rather than fetch it again), and one object's
// writes go one at a time, each from the ctime stamp the last one left
// (which lets a file this process wrote whole skip its read-back). Close
// cancels the background verifications, so a shutdown never waits on a
// whole object.
//
// blockcache knows nothing of S3, file formats or FUSE.
package blockcache
