package csi

// Defaults of the node's budgets.
const (
	defaultMaxMemCache    = 1 << 30
	defaultMemoryHeadroom = 384 << 20 // Go heap (soft-limited to 128 MiB), FUSE buffers, page tables
)
