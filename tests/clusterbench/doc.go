// Command clusterbench measures the shared cache (--shared-cache) as a
// cluster sees it: N modelfs mounts, each a "node" with a disk cache of
// its own, load the same model at once from an origin S3 server whose
// every GET costs an emulated round trip, first without a shared tier,
// then with one on a second S3 server. For each it reports the bytes the
// origin sent, as a multiple of the model's size, and each node's load
// time (mount start to every file read and checked by sha256).
//
// Both servers run in this process on loopback. The origin sits behind
// an emulated link that all nodes share (tests/linkproxy; -origin-mbit,
// 1 Gbit/s by default, and -origin-rtt), as a cluster pulling a model
// over one WAN link does, and every GET of it costs -origin-latency
// more; the shared store is reached directly, or through a link of its
// own (-shared-mbit). It prints each node's load time, their median,
// and the nodes' summed shared_* counters (claims won, lost, timed out,
// refreshed). Run it with `make cluster-bench` (root, or fusermount3);
// CLUSTERFLAGS="-nodes 8 -size 1GiB".
package main
