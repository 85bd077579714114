package modelformat

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Tensor is one tensor of a weight file.
type Tensor struct {
	Name string
	// DType names the element type as the format does: a safetensors
	// dtype ("BF16", "F8_E4M3") or a ggml type ("F16", "Q4_K"); "unknown"
	// for a ggml type this package does not know.
	DType string
	// Shape is as the file states it: outermost dimension first for
	// safetensors, innermost first (ggml's ne order) for GGUF. Nil when
	// Options.NoShapes is set.
	Shape []uint64
	// Offset is absolute in the file; Offset+Length is at most its size.
	Offset, Length int64
}

// Format is the kind of a weight file.
type Format int

const (
	// Unknown is a file that is neither safetensors nor GGUF by its name.
	Unknown Format = iota
	Safetensors
	GGUF
)

func (f Format) String() string {
	switch f {
	case Safetensors:
		return "safetensors"
	case GGUF:
		return "gguf"
	}
	return "unknown"
}

// FormatOf tells a weight file's format by its name's extension, as
// loaders do.
func FormatOf(name string) Format {
	switch {
	case strings.HasSuffix(name, ".safetensors"):
		return Safetensors
	case strings.HasSuffix(name, ".gguf"):
		return GGUF
	}
	return Unknown
}

// Header is a parsed weight-file header.
type Header struct {
	Format Format
	// DataStart is the header's length, length prefix and padding
	// included: where the tensor data starts. A GGUF file that ends
	// before its data section (a vocabulary-only file) has DataStart
	// equal to its size and no tensors.
	DataStart int64
	// Tensors are in header order; they lie within the file, after
	// DataStart, and do not overlap.
	Tensors []Tensor

	// GGUF only: the format version (2 or 3), general.alignment (32 by
	// default), and the values of the keys Options.GGUFKeys asked for.
	Version   uint32
	Alignment int64
	Metadata  map[string]any
}

// DefaultMaxHeader is the largest header accepted by default: the limit of
// the safetensors reference implementation (100 MB), so that any file it
// loads is read here too.
const DefaultMaxHeader = 100_000_000

// Options tune the parsers; the zero value takes the defaults.
type Options struct {
	// MaxHeader bounds the bytes of a header (safetensors: its JSON;
	// GGUF: everything before the data) and of a shard index
	// (default DefaultMaxHeader).
	MaxHeader int64
	// NoShapes leaves Tensor.Shape nil: what parsing keeps is then only
	// names and ranges, for callers that keep many headers.
	NoShapes bool
	// GGUFKeys names the GGUF metadata keys whose values Header.Metadata
	// holds; all other values are skipped unread.
	GGUFKeys []string
}

func (o Options) maxHeader() int64 {
	if o.MaxHeader <= 0 {
		return DefaultMaxHeader
	}
	return o.MaxHeader
}

// Read parses the header of the weight file name (by its extension) of the
// given size. A file of neither format is an error.
func Read(name string, r io.ReaderAt, size int64, opts Options) (*Header, error) {
	switch FormatOf(name) {
	case Safetensors:
		return ReadSafetensors(r, size, opts)
	case GGUF:
		return ReadGGUF(r, size, opts)
	}
	return nil, fmt.Errorf("modelformat: %s is not a .safetensors or .gguf file", name)
}

// checkDuplicates fails if two tensors have one name.
func checkDuplicates(ts []Tensor) error {
	idx := make([]int32, len(ts)) // len(ts) ≤ maxTensors
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int { return strings.Compare(ts[a].Name, ts[b].Name) })
	for k := 1; k < len(idx); k++ {
		if name := ts[idx[k]].Name; name == ts[idx[k-1]].Name {
			return fmt.Errorf("%q appears twice in the header", name)
		}
	}
	return nil
}

// checkOverlap fails if two tensors share a byte: a file that says so is
// corrupt, and a reader must not fetch a byte twice.
func checkOverlap(ts []Tensor) error {
	idx := make([]int32, len(ts))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if c := cmp.Compare(ts[a].Offset, ts[b].Offset); c != 0 {
			return c
		}
		return cmp.Compare(ts[a].Length, ts[b].Length)
	})
	for k := 1; k < len(idx); k++ {
		a, b := ts[idx[k-1]], ts[idx[k]]
		if b.Offset < a.Offset+a.Length {
			return fmt.Errorf("tensors %q and %q overlap", a.Name, b.Name)
		}
	}
	return nil
}

// noEOF turns a bare EOF, which means the input ended too soon, into
// ErrUnexpectedEOF so that the message says so.
func noEOF(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// chunked gathers values in chunks of fixed size, then copies them out
// once: appending to one slice would allocate several times its final
// size as it grows.
type chunked[T any] struct {
	chunks [][]T
	n      int
}

const chunkLen = 1 << 10

func (c *chunked[T]) add(v T) {
	if k := len(c.chunks); k == 0 || len(c.chunks[k-1]) == cap(c.chunks[k-1]) {
		// Chunks grow with the count, so a small header allocates little.
		c.chunks = append(c.chunks, make([]T, 0, min(chunkLen, max(16, c.n))))
	}
	c.chunks[len(c.chunks)-1] = append(c.chunks[len(c.chunks)-1], v)
	c.n++
}

func (c *chunked[T]) all() []T {
	out := make([]T, 0, c.n)
	for _, ch := range c.chunks {
		out = append(out, ch...)
	}
	return out
}

// shapes keeps tensors' shapes in shared slabs, so a header of many small
// shapes costs one allocation per slab rather than one per tensor.
type shapes struct{ slab []uint64 }

// scalar is the shape of every 0-dimensional tensor.
var scalar = []uint64{}

func (s *shapes) keep(dims []uint64) []uint64 {
	if len(dims) == 0 {
		return scalar
	}
	if cap(s.slab)-len(s.slab) < len(dims) {
		s.slab = make([]uint64, 0, max(chunkLen, len(dims)))
	}
	i := len(s.slab)
	s.slab = append(s.slab, dims...)
	return s.slab[i:len(s.slab):len(s.slab)]
}
