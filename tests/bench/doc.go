// Command bench is modelfs's measuring instrument (make bench).
//
// It generates a Llama-style model once (sharded bf16 safetensors with
// index.json, config and tokenizer files, plus one GGUF file) into a cache
// directory, serves it from the in-process S3 test server on loopback —
// optionally behind a proxy that emulates a link's rate and round-trip
// time — and times, against that same server:
//
//   - baselines: raw-get (16 workers × 8 MiB ranged GETs through the AWS
//     SDK, discarded: the limit), download-then-read (parallel download to
//     local disk, then a sequential read: what init containers do) and
//     local-read (the downloaded copy read again from the page cache: the
//     warm limit), plus each scenario's own reads of that copy
//     (local-mmap-header, ...), which its warm and remount rows are
//     compared with;
//   - scenarios through a fresh `modelfs mount` each, with a fresh, empty
//     --cache-dir (cold), then again on the same mount (warm), then on a
//     new mount with the same --cache-dir (remount: blocks from the disk
//     cache, or the cache files handed to the kernel by FUSE passthrough):
//     seq, seq-2g, mmap-header, mmap-random, concurrent-4 and ttft;
//   - peers: the same reads (seq, seq-2g, mmap-header, ttft) through the
//     other S3 filesystems installed (s3fs, rclone mount, goofys), each on
//     a fresh mount with an empty cache, cold then warm, its daemon's CPU
//     read from /proc as modelfs's is.
//
// --link s3 puts an S3-like link between every client and the server (a
// shared rate, a per-connection cap, an RTT) and serves HTTPS with a CA
// made for the run, which every client is told to trust.
//
// The reads are done by this process (ReadAt, mmap), so each timing is of
// the I/O alone. Each mount's CPU time comes from /proc/PID/stat deltas
// around each pass, its peak RSS from /proc/PID/status (VmHWM) and its
// FUSE reads, remote loads and disk hits from the summary line it logs at
// unmount. It prints the machine, then a markdown table of medians (with
// min and max) over --runs, and writes the same numbers to --json. See
// docs/benchmarks.md.
package main
