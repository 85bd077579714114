package modelformat

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strings"
)

// A safetensors file is an 8-byte little-endian header length N, N bytes
// of JSON mapping each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (plus an optional "__metadata__" map of strings), then
// the data: a tensor's bytes are [8+N+begin, 8+N+end).

// stDType is one safetensors dtype: its name (interned, so a tensor's
// DType costs no allocation) and the size of one element in bits (the
// F4/F6 types pack several elements per byte).
type stDType struct {
	name string
	bits uint64
}

var stDTypes = func() map[string]stDType {
	m := map[string]stDType{}
	for name, bits := range map[string]uint64{
		"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
		"U16": 16, "I16": 16, "F16": 16, "BF16": 16,
		"U32": 32, "I32": 32, "F32": 32,
		"U64": 64, "I64": 64, "F64": 64, "C64": 64,
		"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
	} {
		m[name] = stDType{name, bits}
	}
	return m
}()

// Bounds on what a header may hold. A header is at most MaxHeader bytes,
// but within that a hostile one could still make a parser keep far more
// than its size (a value nested without end, names kept twice), so each
// part is bounded on its own.
const (
	// maxTensors bounds the tensors of one file: shards hold hundreds
	// to a few thousand, a whole MoE checkpoint in one file tens of
	// thousands.
	maxTensors = 1 << 18
	// maxName bounds a tensor or shard name (real names are under 200
	// bytes).
	maxName = 4 << 10
	// stMaxDims bounds a shape; NumPy's own limit is 64 dimensions.
	stMaxDims = 64
	// maxDepth bounds the nesting of values skipped unread, as serde_json,
	// the reference implementation's parser, does.
	maxDepth = 128
	// stMaxKey is the longest field name of a tensor entry that is
	// compared (dtype, shape, data_offsets); longer ones are skipped.
	stMaxKey = 16
)

// SafetensorsHeaderLen reads and checks the length prefix of a safetensors
// file of the given size: the JSON is the n bytes after the 8-byte length,
// and the data starts at 8+n. It reads 8 bytes, so callers can size what
// parsing the rest will cost before they commit to it.
func SafetensorsHeaderLen(r io.ReaderAt, size int64, opts Options) (n int64, err error) {
	maxHeader := opts.maxHeader()
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

// ReadSafetensors parses the header of a safetensors file of the given
// size. Everything the file claims is checked before it is used.
func ReadSafetensors(r io.ReaderAt, size int64, opts Options) (*Header, error) {
	return ScanSafetensors(r, size, opts, nil)
}

// ScanSafetensors is ReadSafetensors that also hands each tensor to each,
// if not nil, as soon as its entry has streamed in, before the rest of the
// header is read: its range is already checked against the file, and its
// Shape is valid only during the call. Whether names repeat or ranges
// overlap is known only at the end, so a tensor handed over may still be
// followed by an error; an error from each stops the scan and is returned.
//
// The JSON is streamed, read through a 64 KiB buffer: memory follows the
// tensors found (a small multiple of the header's size at most), never a
// length the file states nor the size of a value it skips.
func ScanSafetensors(r io.ReaderAt, size int64, opts Options, each func(Tensor) error) (*Header, error) {
	n, err := SafetensorsHeaderLen(r, size, opts)
	if err != nil {
		return nil, err
	}
	hdr := 8 + n
	ts, err := scanSafetensorsJSON(io.NewSectionReader(r, 8, n), n, hdr, uint64(size-hdr), opts.NoShapes, each)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if err := checkOverlap(ts); err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return &Header{Format: Safetensors, DataStart: hdr, Tensors: ts}, nil
}

// scanSafetensorsJSON parses the n-byte header JSON read from r, for
// dataLen bytes of data that start at hdr.
func scanSafetensorsJSON(r io.Reader, n, hdr int64, dataLen uint64, noShapes bool, each func(Tensor) error) ([]Tensor, error) {
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
	var (
		tensors chunked[Tensor]
		kept    shapes
		dims    [stMaxDims]uint64
		meta    bool
	)
	err = p.object(func() error {
		key, long, err := p.str(maxName)
		if err != nil {
			return err
		}
		if long {
			return fmt.Errorf("tensor name at offset %d is longer than %d bytes", p.off, maxName)
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
		if tensors.n == maxTensors {
			return fmt.Errorf("more than %d tensors", maxTensors)
		}
		name := string(key)
		dtype, shape, begin, length, err := p.tensor(dataLen, &dims)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		t := Tensor{Name: name, DType: dtype, Offset: hdr + begin, Length: length}
		if each != nil {
			t.Shape = shape
			if err := each(t); err != nil {
				return err
			}
		}
		t.Shape = nil
		if !noShapes {
			t.Shape = kept.keep(shape)
		}
		tensors.add(t)
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
// after the header. It returns the tensor's dtype, its shape (in dims),
// its offset from the data start and its length.
func (p *jsonScanner) tensor(dataLen uint64, dims *[stMaxDims]uint64) (dtype string, shape []uint64, off, length int64, err error) {
	if c, err := p.peek(); err != nil {
		return "", nil, 0, 0, err
	} else if c != '{' {
		return "", nil, 0, 0, fmt.Errorf("entry at offset %d is not an object", p.off)
	}
	const (
		fDtype = 1 << iota
		fShape
		fOffsets
	)
	var (
		rawDtype [stMaxKey]byte // kept for messages only
		dtypeLen int
		dt       stDType
		nDims    int
		seen     int // fields read
		elems    = uint64(1)
		overflow bool
		offs     [2]uint64
		nOffs    int
	)
	err = p.object(func() error {
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
			dtypeLen = copy(rawDtype[:], s)
			if !long {
				dt = stDTypes[string(s)]
			}
		case fShape:
			return p.array("shape", func() error {
				if nDims == stMaxDims {
					return fmt.Errorf("shape has more than %d dimensions", stMaxDims)
				}
				d, err := p.uint()
				if err != nil {
					return err
				}
				dims[nDims] = d
				nDims++
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
		return "", nil, 0, 0, err
	}
	if dt.bits == 0 {
		return "", nil, 0, 0, fmt.Errorf("unknown dtype %q", rawDtype[:dtypeLen])
	}
	if seen&fShape == 0 {
		return "", nil, 0, 0, errors.New("no shape")
	}
	if nOffs != 2 {
		return "", nil, 0, 0, fmt.Errorf("data_offsets has %d values, want 2", nOffs)
	}
	begin, end := offs[0], offs[1]
	if begin > end || end > dataLen {
		return "", nil, 0, 0, fmt.Errorf("data_offsets [%d, %d] outside the %d data bytes", begin, end, dataLen)
	}
	hi, nbits := bits.Mul64(elems, dt.bits)
	if overflow || hi != 0 {
		return "", nil, 0, 0, fmt.Errorf("shape of %d dimensions overflows", nDims)
	}
	if nbits%8 != 0 || nbits/8 != end-begin {
		return "", nil, 0, 0, fmt.Errorf("%s of %d elements is %d bits but data_offsets hold %d bytes", dt.name, elems, nbits, end-begin)
	}
	return dt.name, dims[:nDims], int64(begin), int64(end - begin), nil
}
