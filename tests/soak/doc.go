// Command soak runs modelfs for a set time under many concurrent readers
// and injected store faults, with caches too small for the working set,
// and checks every byte read (make soak).
//
// Usage:
//
//	soak [-duration 5m] [-sizes 32MiB,96MiB,192MiB] [-readers 16]
//	     [-mmap-readers 4] [-fault-rate 0.05] [-mem-cache 32MiB]
//	     [-cache-size auto] [-block-size 1MiB] [-retries 5]
//	     [-request-timeout 2s] [-rss-base 48MiB] [-dir DIR] [-seed N]
//	     [-mount-flags "--pprof ..."] [-progress 30s]
//	     [-modelfs bin/modelfs] [-mmapread bin/mmapread]
//
//	make soak SOAKFLAGS="--duration 8m"
//
// It generates one Llama-style safetensors model per -sizes entry (package
// tests/modelgen), keeps the originals on local disk, puts them into the
// S3 test server (package tests/s3server) running in this process on
// loopback, and mounts each model with the real `modelfs mount`, a
// separate process per model. The mounts share one -cache-dir whose
// budget (-cache-size, auto: a quarter of all the models) is well below
// the working set, and each has a small RAM cache (-mem-cache), so both
// tiers evict all the time.
//
// For -duration, -readers goroutines read: most do random preads of random
// sizes (1 byte to 4 MiB, log-uniform) through os.File.ReadAt and compare
// each with the same range of the original; -mmap-readers of them instead
// run tests/cmd/mmapread as a child process on a whole model, which maps
// every shard, touches every page and prints its sha256, compared with the
// original's. A file's page cache is dropped (fadvise DONTNEED) after each
// pread of it and before each mmap run, so reads keep reaching modelfs
// instead of the kernel serving them after a first pass. mmap runs in
// children only: a page fault that this process's own S3 server had to
// serve could deadlock its garbage collector.
//
// A -fault-rate share of the ranged GETs fail, kinds in equal shares:
// 500 InternalError, 503 SlowDown with Retry-After: 1, a connection reset
// half-way through the body, a truncated body, a body that stalls until
// the client gives up, and a latency spike (half of them shorter than
// -request-timeout, half held past it). Each mount's VmRSS and VmHWM are
// sampled from /proc, and its Prometheus /metrics scraped at the end.
//
// It prints progress every -progress, then the totals: reads, bytes
// verified, faults injected by kind, retries (modelfs_fetch_retries_total),
// EIO, RAM and disk evictions, and each mount's peak RSS against a budget:
// -mem-cache, plus one block per concurrent load (a demand load may go
// over the RAM budget by that), plus the FUSE buffers go-fuse takes from
// the Go heap (an input and a reply buffer of 1 MiB per read in flight, 12
// readahead reads and one per reader, twice over for the garbage the GC
// lets pile up), plus -rss-base for the code, the Go runtime and the SDK.
//
// It exits 1 on any wrong byte; on any EIO, seen by a reader or logged by
// a mount (with -retries 5 a read fails only if five tries in a row fail,
// which at a 5% fault rate is not expected once in a run); on any other
// read error; on an RSS over budget; on a mount that died or did not
// unmount cleanly; on fewer retries than the tries the faults failed; and
// on caches that never evicted (the run would not have tested eviction).
// It exits 2 on bad flags.
package main
