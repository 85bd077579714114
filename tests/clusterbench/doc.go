// Command clusterbench measures the shared cache (--shared-cache) as a
// cluster sees it: N modelfs mounts, each a "node" with a disk cache of
// its own, load the same model at once from an origin S3 server whose
// every GET costs an emulated round trip, first without a shared tier,
// then with one on a second S3 server. For each it reports the bytes the
// origin sent, as a multiple of the model's size, and each node's load
// time (mount start to every file read and checked by sha256).
//
// Both servers run in this process on loopback, so the shared store is
// as fast as the origin but for the origin's added latency: the load
// times show what the tier saves when the origin is the far one, and
// what its claims cost when it is not. Run it with `make cluster-bench`
// (root, or fusermount3); CLUSTERFLAGS="-nodes 8 -size 1GiB".
package main
