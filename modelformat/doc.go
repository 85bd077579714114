// Package modelformat reads the headers of model weight files and walks
// model directories: the one place that knows safetensors, GGUF and the
// Hugging Face shard index.
//
//   - ReadSafetensors and ScanSafetensors (which hands each tensor over
//     as its entry streams in), ReadGGUF (v2 and v3: metadata skipped
//     unless asked for, tensor infos, general.alignment) and ReadIndex
//     return tensors as name, dtype, shape and an absolute byte range,
//     in header order, or the shards an index names.
//   - Tree.Walk lists a model directory with one symlink rule (see Tree).
//
// Headers come from stores and are not trusted, so what reading one costs
// is bounded by the code, not by what it says: a header is at most
// Options.MaxHeader bytes; every count, length and offset is checked
// against the bytes that are really there before anything is allocated;
// tensors, dimensions, names, nesting, GGUF keys and arrays are bounded on
// their own; JSON is streamed and GGUF read field by field through 64 KiB
// buffers, so skipped values (metadata, vocabularies, unknown fields) cost
// no memory, and what parsing keeps is a small multiple of the header's
// size at most (the fuzz targets assert it on every input). Parsed
// tensors lie within the file, after the header, and never overlap.
//
// The package does no I/O beyond the reader or file system it is given.
package modelformat
