package prefetch

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
)

// A safetensors file is an 8-byte little-endian header length N, N bytes
// of JSON mapping each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (plus an optional "__metadata__" map of strings), then
// the data: a tensor's bytes are [8+N+begin, 8+N+end).

// safetensorsBits is the size of one element of each dtype, in bits (the
// F4/F6 types pack several elements per byte).
var safetensorsBits = map[string]uint64{
	"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
	"U16": 16, "I16": 16, "F16": 16, "BF16": 16,
	"U32": 32, "I32": 32, "F32": 32,
	"U64": 64, "I64": 64, "F64": 64, "C64": 64,
	"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

// tensorRange is one tensor of a parsed header: absolute file offset and
// length.
type tensorRange struct {
	name     string
	off, len int64
}

// Bounds on what a header may hold. A header is at most MaxHeader bytes,
// but within that a hostile one could still make a parser keep far more
// than its size (shapes decoded into slices, a value nested without end),
// so each part is bounded on its own and only names and offsets are kept.
const (
	// stMaxTensors bounds the tensors of one file: shards hold hundreds
	// to a few thousand, a whole MoE checkpoint in one file tens of
	// thousands.
	stMaxTensors = 1 << 18
	// stMaxName bounds a tensor name, the only string kept (real names
	// are under 200 bytes).
	stMaxName = 4 << 10
	// stMaxDims bounds a shape; NumPy's own limit is 64 dimensions.
	stMaxDims = 64
	// stMaxDepth bounds the nesting of values skipped unread, as serde_json,
	// the reference implementation's parser, does.
	stMaxDepth = 128
	// stMaxKey is the longest field name of a tensor entry that is
	// compared (dtype, shape, data_offsets); longer ones are skipped.
	stMaxKey = 16
)

// safetensorsHeaderLen reads and checks the header length of a
// safetensors file of the given size: the JSON is the n bytes after the
// 8-byte length.
func safetensorsHeaderLen(r io.ReaderAt, size, maxHeader int64) (n int64, err error) {
	if size < 8 {
		return 0, fmt.Errorf("safetensors: %d-byte file is shorter than the 8-byte header length", size)
	}
	var b [8]byte
	if n, err := r.ReadAt(b[:], 0); n < len(b) {
		return 0, fmt.Errorf("safetensors: reading header length: %w", noEOF(err))
	}
	u := binary.LittleEndian.Uint64(b[:])
	switch {
	case u > uint64(maxHeader):
		return 0, fmt.Errorf("safetensors: %d-byte header exceeds the %d-byte limit", u, maxHeader)
	case u > uint64(size-8):
		return 0, fmt.Errorf("safetensors: %d-byte header runs past the end of the %d-byte file", u, size)
	case u < 2:
		return 0, fmt.Errorf("safetensors: %d-byte header cannot hold a JSON object", u)
	}
	return int64(u), nil
}

// parseSafetensors reads the header of a safetensors file of the given
// size and returns the header's length (8+N: the data start) and the
// tensors in header order. Everything the file claims is checked before it
// is used. The JSON is streamed and only each tensor's name and offsets
// are kept, so memory follows the tensors found (at most about the
// header's size), never a length the file states nor the size of a value.
func parseSafetensors(r io.ReaderAt, size, maxHeader int64) (int64, []tensorRange, error) {
	n, err := safetensorsHeaderLen(r, size, maxHeader)
	if err != nil {
		return 0, nil, err
	}
	hdr := 8 + n
	ts, err := parseSafetensorsJSON(io.NewSectionReader(r, 8, n), n, uint64(size-hdr))
	if err != nil {
		return 0, nil, fmt.Errorf("safetensors: %w", err)
	}
	for i := range ts {
		ts[i].off += hdr
	}
	if err := checkOverlap(ts); err != nil {
		return 0, nil, fmt.Errorf("safetensors: %w", err)
	}
	return hdr, ts, nil
}

// parseSafetensorsJSON parses the n-byte header JSON read from r, for
// dataLen bytes of data after it; offsets are from the data start.
func parseSafetensorsJSON(r io.Reader, n int64, dataLen uint64) ([]tensorRange, error) {
	// The parser reads byte by byte; bufio turns that into 64 KiB reads of
	// the file, which in production go through the cache.
	p := &jsonScanner{r: bufio.NewReaderSize(r, int(min(n, 64<<10)))}
	c, err := p.peek()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if c != '{' {
		if strings.IndexByte(`["-0123456789tfn`, c) >= 0 {
			return nil, errors.New("header is not a JSON object")
		}
		return nil, fmt.Errorf("header: %w", p.invalid(c, "'{'"))
	}
	var tensors chunked[tensorRange]
	meta := false
	err = p.object(func() error {
		key, long, err := p.str(stMaxName)
		if err != nil {
			return err
		}
		if long {
			return fmt.Errorf("tensor name at offset %d is longer than %d bytes", p.off, stMaxName)
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		if string(key) == "__metadata__" {
			if meta {
				return errors.New("__metadata__ appears twice in the header")
			}
			meta = true
			if err := p.metadata(); err != nil {
				return fmt.Errorf("__metadata__ is not a map of strings: %w", err)
			}
			return nil
		}
		if tensors.n == stMaxTensors {
			return fmt.Errorf("more than %d tensors", stMaxTensors)
		}
		name := string(key)
		begin, length, err := p.tensor(dataLen)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		tensors.add(tensorRange{name: name, off: begin, len: length})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	// Writers pad the header with spaces; anything else after the object
	// is a malformed header.
	if _, err := p.peek(); err != io.ErrUnexpectedEOF {
		return nil, errors.New("data after the header's JSON object")
	}
	ts := tensors.all()
	if err := checkDuplicates(ts); err != nil {
		return nil, err
	}
	return ts, nil
}

// metadata skips the __metadata__ value, a map of strings or null.
func (p *jsonScanner) metadata() error {
	if c, err := p.peek(); err != nil {
		return err
	} else if c == 'n' {
		return p.skip(0)
	}
	return p.object(func() error {
		if _, _, err := p.str(0); err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		_, _, err := p.str(0)
		return err
	})
}

// tensor reads one tensor entry and checks it against the dataLen bytes
// after the header. It returns the tensor's offset from the data start and
// its length; the shape is checked as it streams by, not kept.
func (p *jsonScanner) tensor(dataLen uint64) (int64, int64, error) {
	if c, err := p.peek(); err != nil {
		return 0, 0, err
	} else if c != '{' {
		return 0, 0, fmt.Errorf("entry at offset %d is not an object", p.off)
	}
	const (
		fDtype = 1 << iota
		fShape
		fOffsets
	)
	var (
		dtype    [stMaxKey]byte // kept for messages only
		dtypeLen int
		elemBits uint64
		dims     int
		seen     int // fields read
		elems    = uint64(1)
		overflow bool
		offs     [2]uint64
		nOffs    int
	)
	err := p.object(func() error {
		k, long, err := p.str(stMaxKey)
		if err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		field := 0
		if !long {
			switch string(k) {
			case "dtype":
				field = fDtype
			case "shape":
				field = fShape
			case "data_offsets":
				field = fOffsets
			}
		}
		if field == 0 {
			return p.skip(1)
		}
		if seen&field != 0 {
			return fmt.Errorf("a field appears twice at offset %d", p.off)
		}
		seen |= field
		if c, err := p.peek(); err != nil {
			return err
		} else if c == 'n' { // null: as if absent
			seen &^= field
			return p.skip(1)
		}
		switch field {
		case fDtype:
			if c, _ := p.peek(); c != '"' {
				return fmt.Errorf("dtype at offset %d is not a string", p.off)
			}
			s, long, err := p.str(stMaxKey)
			if err != nil {
				return err
			}
			dtypeLen = copy(dtype[:], s)
			if !long {
				elemBits = safetensorsBits[string(s)]
			}
		case fShape:
			return p.array("shape", func() error {
				if dims == stMaxDims {
					return fmt.Errorf("shape has more than %d dimensions", stMaxDims)
				}
				d, err := p.uint()
				if err != nil {
					return err
				}
				dims++
				hi, lo := bits.Mul64(elems, d)
				overflow = overflow || hi != 0
				elems = lo
				return nil
			})
		case fOffsets:
			return p.array("data_offsets", func() error {
				if nOffs == 2 {
					return errors.New("data_offsets has more than 2 values, want 2")
				}
				v, err := p.uint()
				offs[nOffs] = v
				nOffs++
				return err
			})
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if elemBits == 0 {
		return 0, 0, fmt.Errorf("unknown dtype %q", dtype[:dtypeLen])
	}
	if seen&fShape == 0 {
		return 0, 0, errors.New("no shape")
	}
	if nOffs != 2 {
		return 0, 0, fmt.Errorf("data_offsets has %d values, want 2", nOffs)
	}
	begin, end := offs[0], offs[1]
	if begin > end || end > dataLen {
		return 0, 0, fmt.Errorf("data_offsets [%d, %d] outside the %d data bytes", begin, end, dataLen)
	}
	hi, nbits := bits.Mul64(elems, elemBits)
	if overflow || hi != 0 {
		return 0, 0, fmt.Errorf("shape of %d dimensions overflows", dims)
	}
	if nbits%8 != 0 || nbits/8 != end-begin {
		return 0, 0, fmt.Errorf("%s of %d elements is %d bits but data_offsets hold %d bytes", dtype[:dtypeLen], elems, nbits, end-begin)
	}
	return int64(begin), int64(end - begin), nil
}

// checkDuplicates fails if two tensors have one name.
func checkDuplicates(ts []tensorRange) error {
	idx := make([]int32, len(ts)) // len(ts) ≤ stMaxTensors
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int { return strings.Compare(ts[a].name, ts[b].name) })
	for k := 1; k < len(idx); k++ {
		if name := ts[idx[k]].name; name == ts[idx[k-1]].name {
			return fmt.Errorf("%q appears twice in the header", name)
		}
	}
	return nil
}

// checkOverlap fails if two tensors share a byte: a file that says so is
// corrupt, and a plan must not fetch a byte twice.
func checkOverlap(ts []tensorRange) error {
	idx := make([]int, len(ts))
	for i := range idx {
		idx[i] = i
	}
	sortByOffset(idx, ts)
	for k := 1; k < len(idx); k++ {
		a, b := ts[idx[k-1]], ts[idx[k]]
		if b.off < a.off+a.len {
			return fmt.Errorf("tensors %q and %q overlap", a.name, b.name)
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
