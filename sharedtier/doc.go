// Package sharedtier is a cluster-wide block tier on an S3-compatible
// store: a blockcache.Loader that wraps the origin's Loader, so that many
// nodes cold-starting the same model fetch each block from the origin
// about once, and from the shared store (in the same region, often the
// same zone) after that.
//
// Protocol. A block's identity is its object's source (scheme, endpoint
// or host, bucket, key), version and size, the block size and the block's
// index; its sha256 names two keys under the prefix:
//
//	blocks/<sha256>   the block, in a small header format (format.go)
//	claims/<sha256>   a claim: some node is fetching the block from the origin
//
// A load GETs blocks/<h> (one whole-object GET). A valid copy is a hit.
// On a miss (404, or a copy that fails its check) it PUTs claims/<h> with
// If-None-Match: *; the one node whose PUT succeeds fetches the block
// from the origin, hands it to the reader, and writes it back in the
// background, then deletes the claim; until then it rewrites the claim
// every ClaimRefresh (If-Match on its own ETag). The others (412) poll
// blocks/<h> with a backoff from 20ms to 500ms for ClaimWait (or three
// times this node's average origin load, when longer), and on while the
// claim is fresh by the store's clock, ClaimTTL at most in all, and read
// the origin themselves once the wait is over: a slow winner is waited
// for, a dead one is not. If the claim disappears with
// no block (the winner failed or dropped its write), they claim the block
// again (at most 3 rounds), so one of them, not all, reads the origin. A
// winner GETs the block once more before the origin: another node may
// have written it between this node's miss and its claim. A claim older
// than ClaimTTL by the store's own clock (its Date header against the
// claim's Last-Modified, so node clocks do not matter) belongs to a node
// that died: it is taken over with If-Match on its ETag, so of the nodes
// that saw it stale one wins.
//
// Invariants:
//   - A shared block is used only if its header names exactly the
//     identity asked for, its length is the block's, and the xxhash64 of
//     identity and payload matches. Otherwise it is a miss, counted
//     (Damaged), and overwritten by the next winner. xxhash64, as the disk
//     tier uses, finds damage and truncation at memory speed; it is not a
//     defence against a writer of the shared store: blocks from the tier
//     count for no more than blocks from the origin, and the cache's
//     whole-object check against the origin's checksum (blockcache's
//     Verifier) still runs on them. An object that fails that check has
//     its shared blocks deleted (PurgeObject, blockcache's Purger), so
//     later nodes fetch it from the origin again.
//   - A key is a hash of the identity, never a path: a block can never be
//     served for another source, object, version or block size, and the
//     store's listing does not show what it holds. A node only asks for
//     identities of objects it listed with its own credentials.
//   - A reader never waits for the shared store's writes: write-backs go
//     through a queue bounded in bytes (QueueBytes) and writers
//     (Writers); when it is full the write is dropped and counted, and the
//     claim released.
//   - The shared store never fails a read: every request to it has a
//     timeout (RequestTimeout), and any failure that is not a plain miss
//     (timeout, refused credentials, 5xx) sends the read to the origin and
//     leaves the store alone for DownFor, so an outage costs one timeout.
//     Only the origin's errors reach the reader.
//   - Objects whose identity is local to a node (Options.Shareable) never
//     go through the tier.
//
// Failure modes: a winner that dies leaves a claim that delays the
// block's other readers by ClaimWait until ClaimTTL passes; a store that
// loses or refuses writes makes every reader wait up to ClaimWait once
// per block (then they read the origin); a store without conditional
// writes (If-None-Match) answers 501 or ignores it — the first makes the
// tier fall back to the origin, the second lets every node win and fetch,
// as without the tier. The store's credentials need GetObject, PutObject,
// DeleteObject and ListBucket on the prefix (without ListBucket, S3
// answers a missing key with 403, which reads as a failing store).
package sharedtier
