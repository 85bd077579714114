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
//     warm limit);
//   - scenarios through a fresh `modelfs mount` each (cold), then again on
//     the same mount (warm): seq, seq-2g, mmap-header, mmap-random,
//     concurrent-4 and ttft.
//
// The reads are done by this process (ReadAt, mmap), so each timing is of
// the I/O alone. Each mount's CPU time comes from /proc/PID/stat deltas
// around each pass and its peak RSS from its rusage at exit. It prints the
// machine, then a markdown table of medians (with min and max) over --runs,
// and writes the same numbers to --json. See docs/benchmarks.md.
package main
