// Package fetch reads remote model objects: S3 and S3-compatible stores,
// Google Cloud Storage, Azure Blob Storage, HTTP(S) servers, Hugging Face
// Hub repositories and local directories, behind one small Source
// interface. For writers of those stores (pack publishing) it also builds
// the S3 and Azure clients with the sources' settings, and carries Cloud
// Storage's upload calls over the GCS source's client; a Source itself
// never writes.
//
// Invariants:
//   - Every object is pinned at Stat/List time to a version (ETag, VersionId
//     of S3 or a versioned Azure account, a Cloud Storage generation,
//     Last-Modified for HTTP files without a strong ETag, the LFS sha256 or
//     git blob id of a Hub file, whose repo is pinned to one commit, or
//     size+mtime for local files). Every ReadAt names that version and
//     fails with ErrChanged if the remote object is no longer it; bytes of
//     two versions are never mixed. Usable refuses objects with nothing to pin (ErrUnpinned).
//   - Sizes come from the remote and are not trusted: Usable refuses those
//     negative, unknown or over MaxObjectSize (ErrBadSize) before anything
//     is sized from them, and replies must match the range asked for.
//   - Transient failures (5xx, SlowDown, timeouts, resets, short bodies) are
//     retried with exponential backoff and jitter within a bounded budget;
//     then the error surfaces, wrapped with the object key and range.
//   - Credentials and tokens never appear in errors or logs.
//
// fetch knows nothing of blocks, caches or FUSE.
package fetch
