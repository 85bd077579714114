// Package gpuwarm gets a GPU node ready to start an inference server on a
// model directory (usually a modelfs mount), and says when it is.
//
// A Warmer runs these phases, each timed:
//
//   - nvml_init, inventory: through NVML (an interface this package
//     declares, implemented over go-nvml when built with cgo), the GPUs'
//     names, UUIDs, memory, driver and CUDA driver versions, persistence
//     mode (optionally turned on) and basic health: uncorrected ECC errors,
//     retired pages and remapped rows where the GPU reports them. Without
//     an NVIDIA driver this is one log line and the rest still runs, unless
//     Options.RequireGPU.
//   - plan: the model's safetensors and GGUF headers are read (loadorder.Plan)
//     for the tensor bytes, which must fit, divided by the tensor-parallel
//     degree, in a fraction of the free memory of each GPU that would be
//     used; and for the order in which a loader reads the model, unless a
//     recorded load profile gives that order.
//   - pin: the first bytes of that order, up to a budget, are mapped
//     (PROT_READ, MAP_SHARED) and mlocked, so that they stay in the page
//     cache while the Warmer holds them. RLIMIT_MEMLOCK is checked first.
//   - warmup (optional): an OpenAI-compatible server is sent requests of
//     each configured shape until its first-request overheads are paid.
//   - verify: when the model is in a modelfs mount, its stats file tells
//     each file's state against its store's checksum (decoded here, so
//     that nothing of the filesystem is linked): a failed file is never
//     ready; Options.RequireVerified refuses pending and unverified ones
//     too, and a model that is not in a modelfs mount.
//
// Readiness is then reported: /readyz turns 200, a ready file is written,
// and the report (phase timings included) is returned for printing.
// Handler serves /readyz, /livez and /metrics from a private Prometheus
// registry.
//
// gpuwarm reads load orders and profiles with modelformat/loadorder, not
// through the prefetcher, and imports nothing of the filesystem: it reads
// the model through ordinary files.
package gpuwarm
