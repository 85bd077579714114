package prefetch

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
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

// safetensorsInfo is one tensor entry of the header JSON.
type safetensorsInfo struct {
	Dtype       string   `json:"dtype"`
	Shape       []uint64 `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// parseSafetensors reads the header of a safetensors file of the given
// size and returns the header's length (8+N: the data start) and the
// tensors in header order. Everything the file claims is checked before it
// is used; the JSON is streamed, so memory follows the bytes actually read,
// never a length the file states.
func parseSafetensors(r io.ReaderAt, size, maxHeader int64) (int64, []tensorRange, error) {
	if size < 8 {
		return 0, nil, fmt.Errorf("safetensors: %d-byte file is shorter than the 8-byte header length", size)
	}
	var b [8]byte
	if n, err := r.ReadAt(b[:], 0); n < len(b) {
		return 0, nil, fmt.Errorf("safetensors: reading header length: %w", noEOF(err))
	}
	n := binary.LittleEndian.Uint64(b[:])
	switch {
	case n > uint64(maxHeader):
		return 0, nil, fmt.Errorf("safetensors: %d-byte header exceeds the %d-byte limit", n, maxHeader)
	case n > uint64(size-8):
		return 0, nil, fmt.Errorf("safetensors: %d-byte header runs past the end of the %d-byte file", n, size)
	case n < 2:
		return 0, nil, fmt.Errorf("safetensors: %d-byte header cannot hold a JSON object", n)
	}
	hdr := 8 + int64(n)
	dataLen := uint64(size - hdr)

	// The decoder reads in small pieces; bufio turns them into 64 KiB reads
	// of the file, which in production go through the cache.
	dec := json.NewDecoder(bufio.NewReaderSize(io.NewSectionReader(r, 8, int64(n)), int(min(n, 64<<10))))
	if tok, err := dec.Token(); err != nil {
		return 0, nil, fmt.Errorf("safetensors: header: %w", noEOF(err))
	} else if tok != json.Delim('{') {
		return 0, nil, fmt.Errorf("safetensors: header is not a JSON object")
	}
	var tensors []tensorRange
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, nil, fmt.Errorf("safetensors: header: %w", noEOF(err))
		}
		name, _ := tok.(string) // inside an object the decoder only yields string keys
		if seen[name] {
			return 0, nil, fmt.Errorf("safetensors: %q appears twice in the header", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			var meta map[string]string
			if err := dec.Decode(&meta); err != nil {
				return 0, nil, fmt.Errorf("safetensors: __metadata__ is not a map of strings: %w", noEOF(err))
			}
			continue
		}
		var info safetensorsInfo
		if err := dec.Decode(&info); err != nil {
			return 0, nil, fmt.Errorf("safetensors: tensor %q: %w", name, noEOF(err))
		}
		begin, length, err := info.check(dataLen)
		if err != nil {
			return 0, nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		tensors = append(tensors, tensorRange{name: name, off: hdr + begin, len: length})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return 0, nil, fmt.Errorf("safetensors: header: %w", noEOF(err))
	}
	// Writers pad the header with spaces, which the decoder skips; anything
	// else after the object is a malformed header.
	if _, err := dec.Token(); err != io.EOF {
		return 0, nil, fmt.Errorf("safetensors: data after the header's JSON object")
	}
	if err := checkOverlap(tensors); err != nil {
		return 0, nil, fmt.Errorf("safetensors: %w", err)
	}
	return hdr, tensors, nil
}

// check validates one entry against the dataLen bytes after the header and
// returns its offset from the data start and its length.
func (info safetensorsInfo) check(dataLen uint64) (int64, int64, error) {
	elemBits, ok := safetensorsBits[info.Dtype]
	if !ok {
		return 0, 0, fmt.Errorf("unknown dtype %q", info.Dtype)
	}
	if info.Shape == nil {
		return 0, 0, errors.New("no shape")
	}
	if len(info.DataOffsets) != 2 {
		return 0, 0, fmt.Errorf("data_offsets has %d values, want 2", len(info.DataOffsets))
	}
	begin, end := info.DataOffsets[0], info.DataOffsets[1]
	if begin > end || end > dataLen {
		return 0, 0, fmt.Errorf("data_offsets [%d, %d] outside the %d data bytes", begin, end, dataLen)
	}
	elems := uint64(1)
	for _, d := range info.Shape {
		hi, lo := bits.Mul64(elems, d)
		if hi != 0 {
			return 0, 0, fmt.Errorf("shape %v overflows", info.Shape)
		}
		elems = lo
	}
	hi, nbits := bits.Mul64(elems, elemBits)
	if hi != 0 {
		return 0, 0, fmt.Errorf("shape %v overflows", info.Shape)
	}
	if nbits%8 != 0 || nbits/8 != end-begin {
		return 0, 0, fmt.Errorf("%s%v is %d bits but data_offsets hold %d bytes", info.Dtype, info.Shape, nbits, end-begin)
	}
	return int64(begin), int64(end - begin), nil
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
