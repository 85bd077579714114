// Package loadorder is the order in which an inference loader reads a
// model's files: from their headers, or as a load once recorded.
//
//   - Plan reads safetensors (single and sharded, via
//     model.safetensors.index.json) and GGUF headers, through modelformat,
//     and lists the byte ranges in the order a loader wants them: small
//     files whole, then per checkpoint its headers and its tensors in
//     layer order (Order: embeddings, each stack's layers in turn, final
//     norm, head).
//   - Profiles: WriteProfile and ReadProfile store a recorded load, the
//     ranges first read in order (docs/profile-format.md); Filter keeps
//     the entries whose object versions still match.
//
// The prefetcher follows these orders ahead of a reader; gpuwarm pins
// their first bytes. Neither depends on the other for them.
//
// Bounds: a header is at most PlanOptions.MaxHeader bytes (by default the
// safetensors reference implementation's 100 MB); what one Plan keeps of
// all its files' tensors is at most PlanOptions.MaxKept; headers are
// parsed at most PlanOptions.Parallel at a time, within a HeaderBudget a
// mount shares across its models. ReadProfile treats its input as
// hostile: every count and length is checked before anything is
// allocated for it. The package does no I/O beyond the readers it is
// given.
package loadorder
