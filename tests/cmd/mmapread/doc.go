// Command mmapread reads a model directory the way an ordinary inference
// loader does, to check and benchmark modelfs from the outside.
//
// Usage:
//
//	mmapread [-order header|random] [-quiet] DIR
//
// For each *.safetensors file in DIR (sorted) it mmaps the file read-only
// and shared, parses the header from the mapping, then touches one byte per
// 4 KiB page of every tensor in header order (or a fixed shuffled order with
// -order random). That is the page-fault pattern safetensors and GGUF
// loaders produce, which is what modelfs's prefetching has to serve well.
// Finally it hashes the whole mapping, so a wrong byte anywhere shows up.
//
// Output is one line per file, then a total:
//
//	<sha256>  <name>  <n> tensors  <MiB/s> MiB/s
//	total  <files> files  <n> tensors  <MiB> MiB  <MiB/s> MiB/s
//
// With -quiet only "<sha256>  <name>" lines are printed, which is the
// sha256sum format, so the output can be diffed against sha256sum of the
// source files. Any failure prints one line to stderr and exits 1.
package main
