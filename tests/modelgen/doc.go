// Package modelgen writes realistic, deterministic Llama-style models in the
// Hugging Face safetensors layout, for tests, the demo and benchmarks.
//
// A generated model looks like a real checkpoint to anything that reads it:
// sharded model-0000K-of-0000N.safetensors files with a JSON header
// (keys sorted, as the safetensors library writes them) followed by bf16
// tensor data laid out in state-dict order, plus model.safetensors.index.json,
// config.json, generation_config.json, tokenizer_config.json and a
// plausible tokenizer.json. The total size is chosen by the caller and the
// shapes are scaled to hit it, so the same code can produce a 20 MiB model
// for a unit test and a 20 GiB one for a benchmark.
//
// Weight bytes are bf16 samples of N(0, 0.02) (norm weights are near 1.0),
// so they compress and look like real weights. They are a pure function of
// Options: every 4 MiB chunk of every tensor has its own PRNG stream derived
// from the seed, so generation runs in parallel and is still reproducible,
// and no two tensors (or chunks) share a byte run — a server that returns
// the wrong block fails a checksum instead of passing by accident.
//
// ParseSafetensors reads a safetensors header back with modelformat's
// parser (bounded and fuzzed), in this package's Tensor form.
//
// WriteHFCache writes a Hugging Face cache repository whose snapshot is
// links into its blobs/, with links a model-directory walk must refuse.
package modelgen
