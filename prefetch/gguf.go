package prefetch

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
)

// A GGUF file (llama.cpp's format, v2 and v3) is, all little-endian:
//
//	magic "GGUF", version uint32, tensor count uint64, KV count uint64
//	KV pairs:     key (uint64 length + bytes), value type uint32, value
//	tensor infos: name, n_dims uint32, dims uint64 × n_dims, ggml type
//	              uint32, offset uint64 (from the data section's start)
//	padding to general.alignment (default 32), then the tensor data.

const (
	ggufDefaultAlignment = 32
	// ggufMaxDims is ggml's GGML_MAX_DIMS.
	ggufMaxDims = 4
	// ggufMaxName bounds a tensor name, the only string the planner keeps.
	// llama.cpp rejects names of 64 bytes or more; this leaves room for
	// other writers while bounding what one name can allocate.
	ggufMaxName = 4 << 10
	// Smallest encodings, which bound how many entries a header can hold.
	ggufMinKV     = 8 + 4 + 1     // empty key, type, one-byte value
	ggufMinTensor = 8 + 4 + 4 + 8 // empty name, no dims, type, offset
	// Counts are bounded beyond what the header's bytes allow, so that a
	// hostile header costs little time as well as little memory. Real
	// files have tens of keys, hundreds to a few thousand tensors and
	// arrays (vocabularies, merges) of at most about a million entries.
	ggufMaxKV      = 1 << 16
	ggufMaxTensors = stMaxTensors
	ggufMaxArray   = 1 << 24
	// ggufTensorCost is what parsing keeps per tensor besides its name.
	ggufTensorCost = 48
)

// GGUF metadata value types.
const (
	ggufUint8 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// ggufScalarSize is the encoded size of each fixed-size value type.
var ggufScalarSize = map[uint32]uint64{
	ggufUint8: 1, ggufInt8: 1, ggufBool: 1,
	ggufUint16: 2, ggufInt16: 2,
	ggufUint32: 4, ggufInt32: 4, ggufFloat32: 4,
	ggufUint64: 8, ggufInt64: 8, ggufFloat64: 8,
}

// ggmlType is the storage of one ggml tensor type: elements per block and
// bytes per block (ggml's blck_size and type_size).
type ggmlType struct{ block, bytes uint64 }

// ggmlTypes lists the types ggml defines; the numbers are ggml_type's.
// A tensor of a type not listed is bounded by the next tensor instead.
var ggmlTypes = map[uint32]ggmlType{
	0:  {1, 4},     // F32
	1:  {1, 2},     // F16
	2:  {32, 18},   // Q4_0
	3:  {32, 20},   // Q4_1
	6:  {32, 22},   // Q5_0
	7:  {32, 24},   // Q5_1
	8:  {32, 34},   // Q8_0
	9:  {32, 36},   // Q8_1
	10: {256, 84},  // Q2_K
	11: {256, 110}, // Q3_K
	12: {256, 144}, // Q4_K
	13: {256, 176}, // Q5_K
	14: {256, 210}, // Q6_K
	15: {256, 292}, // Q8_K
	16: {256, 66},  // IQ2_XXS
	17: {256, 74},  // IQ2_XS
	18: {256, 98},  // IQ3_XXS
	19: {256, 50},  // IQ1_S
	20: {32, 18},   // IQ4_NL
	21: {256, 110}, // IQ3_S
	22: {256, 82},  // IQ2_S
	23: {256, 136}, // IQ4_XS
	24: {1, 1},     // I8
	25: {1, 2},     // I16
	26: {1, 4},     // I32
	27: {1, 8},     // I64
	28: {1, 8},     // F64
	29: {256, 56},  // IQ1_M
	30: {1, 2},     // BF16
	34: {256, 54},  // TQ1_0
	35: {256, 66},  // TQ2_0
	39: {32, 17},   // MXFP4
}

// ggufWeight is what parsing the header of a GGUF file may hold at most,
// from the tensor count it states: what each tensor keeps, up to the bytes
// the header may have. It is 0 if the file is not GGUF.
func ggufWeight(r io.ReaderAt, size, maxHeader int64) int64 {
	var b [24]byte
	if n, _ := r.ReadAt(b[:], 0); n < len(b) || string(b[:4]) != "GGUF" {
		return 0
	}
	tensors := min(binary.LittleEndian.Uint64(b[8:]), ggufMaxTensors)
	return min(size, maxHeader, int64(tensors)*(ggufTensorCost+ggufMaxName))
}

// parseGGUF reads the header of a GGUF file of the given size and returns
// the header's length (the data section's start, or the file size if the
// file ends before it) and the tensors in header order. The header is
// read in bounded chunks, at most maxHeader bytes of it; every count and
// length is checked against the bytes left before it is used.
func parseGGUF(r io.ReaderAt, size, maxHeader int64) (int64, []tensorRange, error) {
	limit := min(size, maxHeader)
	d := &ggufReader{
		br:     bufio.NewReaderSize(io.NewSectionReader(r, 0, limit), int(min(max(limit, 16), 64<<10))),
		limit:  limit,
		capped: limit < size,
	}
	if magic := d.fixed(4); d.err == nil && string(magic) != "GGUF" {
		return 0, nil, fmt.Errorf("gguf: bad magic %q", magic)
	}
	switch v := d.u32(); {
	case d.err != nil:
	case v == 2 || v == 3: // v1 had 32-bit counts and is long gone
	case bits.ReverseBytes32(v) == 2 || bits.ReverseBytes32(v) == 3:
		return 0, nil, errors.New("gguf: big-endian files are not supported")
	default:
		return 0, nil, fmt.Errorf("gguf: version %d is not supported", v)
	}
	nTensors, nKV := d.u64(), d.u64()
	if d.err == nil && (nTensors > uint64(d.left())/ggufMinTensor || nKV > uint64(d.left())/ggufMinKV) {
		return 0, nil, fmt.Errorf("gguf: %d tensors and %d keys cannot fit in %d header bytes", nTensors, nKV, d.left())
	}
	if d.err == nil && (nTensors > ggufMaxTensors || nKV > ggufMaxKV) {
		return 0, nil, fmt.Errorf("gguf: %d tensors and %d keys: more than the %d tensors or %d keys accepted", nTensors, nKV, ggufMaxTensors, ggufMaxKV)
	}

	align := uint64(ggufDefaultAlignment)
	for i := uint64(0); i < nKV && d.err == nil; i++ {
		// Only general.alignment matters here, so other keys are skipped,
		// not read into memory.
		isAlign := d.key("general.alignment")
		typ := d.u32()
		if !isAlign {
			d.skipValue(typ)
			continue
		}
		if d.err == nil && typ != ggufUint32 {
			return 0, nil, fmt.Errorf("gguf: general.alignment has value type %d, want uint32", typ)
		}
		a := d.u32()
		if d.err == nil && (a == 0 || a&(a-1) != 0) {
			return 0, nil, fmt.Errorf("gguf: general.alignment %d is not a power of two", a)
		}
		align = uint64(a)
	}

	// Each tensor is kept as its range already: name, offset relative to
	// the data section and length, -1 for a type ggml lacks.
	var kept chunked[tensorRange]
	for i := uint64(0); i < nTensors && d.err == nil; i++ {
		name := d.name()
		nDims := d.u32()
		if d.err == nil && nDims > ggufMaxDims {
			return 0, nil, fmt.Errorf("gguf: tensor %q has %d dims, more than %d", name, nDims, ggufMaxDims)
		}
		var dims [ggufMaxDims]uint64
		for j := range nDims {
			dims[j] = d.u64()
		}
		typ, offset := d.u32(), d.u64()
		if d.err != nil {
			break
		}
		// So the offset fits an int64 from here on.
		if offset > uint64(size) {
			return 0, nil, fmt.Errorf("gguf: tensor %q at offset %d is past the end of the %d-byte file", name, offset, size)
		}
		t := tensorRange{name: name, off: int64(offset), len: -1}
		if gt, ok := ggmlTypes[typ]; ok {
			n, err := ggmlBytes(dims[:nDims], gt)
			if err != nil {
				return 0, nil, fmt.Errorf("gguf: tensor %q: %w", name, err)
			}
			t.len = int64(n) // ≤ 2^62
		}
		kept.add(t)
	}
	if d.err != nil {
		return 0, nil, d.err
	}
	infos := kept.all()

	// d.n < 2^63 and align ≤ 2^31, so this cannot overflow.
	dataStart := (uint64(d.n) + align - 1) / align * align
	if dataStart > uint64(size) {
		if len(infos) > 0 {
			return 0, nil, fmt.Errorf("gguf: data section starts at %d, past the end of the %d-byte file", dataStart, size)
		}
		return size, nil, nil
	}
	if err := ggufRanges(infos, int64(dataStart), uint64(size)-dataStart, align); err != nil {
		return 0, nil, fmt.Errorf("gguf: %w", err)
	}
	return int64(dataStart), infos, nil
}

// ggufRanges checks each tensor as parsed (offset relative to the data
// section, length -1 for an unknown type) against the dataLen bytes of the
// data section, and turns it into its absolute range, in place.
func ggufRanges(ts []tensorRange, dataStart int64, dataLen, align uint64) error {
	// Offsets in ascending order bound tensors of types the table lacks.
	var offs []int64
	if slices.ContainsFunc(ts, func(t tensorRange) bool { return t.len < 0 }) {
		offs = make([]int64, len(ts))
		for i, t := range ts {
			offs[i] = t.off
		}
		slices.Sort(offs)
	}
	for i := range ts {
		t := &ts[i]
		off := uint64(t.off)
		if off%align != 0 {
			return fmt.Errorf("tensor %q at offset %d is not %d-aligned", t.name, off, align)
		}
		if off > dataLen {
			return fmt.Errorf("tensor %q at offset %d is past the %d data bytes", t.name, off, dataLen)
		}
		if t.len >= 0 {
			if uint64(t.len) > dataLen-off {
				return fmt.Errorf("tensor %q [%d, +%d) runs past the %d data bytes", t.name, off, t.len, dataLen)
			}
		} else {
			// Unknown type: all it can hold is up to the next tensor.
			next := dataLen
			if k, _ := slices.BinarySearch(offs, t.off+1); k < len(offs) {
				next = uint64(offs[k])
			}
			t.len = int64(next - off)
		}
		t.off += dataStart
	}
	return checkOverlap(ts)
}

// ggmlBytes is the size of the data of a tensor of type gt with dims,
// checked for overflow.
func ggmlBytes(dims []uint64, gt ggmlType) (uint64, error) {
	elems := uint64(1)
	for _, d := range dims {
		hi, lo := bits.Mul64(elems, d)
		if hi != 0 {
			return 0, fmt.Errorf("shape %v overflows", dims)
		}
		elems = lo
	}
	// ggml stores blocks along the first dimension, which must divide.
	ne0 := uint64(1)
	if len(dims) > 0 {
		ne0 = dims[0]
	}
	if ne0%gt.block != 0 {
		return 0, fmt.Errorf("first dimension %d is not a multiple of the type's %d-element block", ne0, gt.block)
	}
	hi, n := bits.Mul64(elems/gt.block, gt.bytes)
	if hi != 0 || n > 1<<62 {
		return 0, fmt.Errorf("shape %v overflows", dims)
	}
	return n, nil
}

// ggufReader reads the header's fields and remembers the first error.
type ggufReader struct {
	br     *bufio.Reader
	n      int64 // bytes consumed
	limit  int64 // bytes that may be consumed
	capped bool  // limit is MaxHeader, not the file's end
	err    error
	buf    [32]byte
}

func (d *ggufReader) left() int64 { return d.limit - d.n }

// short records that the header wants more bytes than there are.
func (d *ggufReader) short(want uint64) {
	if d.err != nil {
		return
	}
	if d.capped {
		d.err = fmt.Errorf("gguf: header needs %d more bytes at offset %d, beyond the %d-byte header limit", want, d.n, d.limit)
	} else {
		d.err = fmt.Errorf("gguf: header needs %d more bytes at offset %d, beyond the end of the %d-byte file", want, d.n, d.limit)
	}
}

func (d *ggufReader) tooMany(count uint64) {
	d.err = fmt.Errorf("gguf: array of %d elements at offset %d cannot fit in the %d header bytes left", count, d.n, d.left())
}

func (d *ggufReader) overMaxArray(count uint64) bool {
	if count > ggufMaxArray {
		d.err = fmt.Errorf("gguf: array of %d elements at offset %d: more than the %d accepted", count, d.n-8, ggufMaxArray)
	}
	return d.err != nil
}

func (d *ggufReader) readErr(err error) {
	if d.err == nil {
		d.err = fmt.Errorf("gguf: reading header at offset %d: %w", d.n, noEOF(err))
	}
}

// fixed reads k ≤ len(d.buf) bytes; after an error it returns zeros.
func (d *ggufReader) fixed(k int) []byte {
	p := d.buf[:k]
	if d.err == nil && int64(k) > d.left() {
		d.short(uint64(k))
	}
	if d.err != nil {
		clear(p)
		return p
	}
	if _, err := io.ReadFull(d.br, p); err != nil {
		d.readErr(err)
		clear(p)
		return p
	}
	d.n += int64(k)
	return p
}

func (d *ggufReader) u32() uint32 { return binary.LittleEndian.Uint32(d.fixed(4)) }
func (d *ggufReader) u64() uint64 { return binary.LittleEndian.Uint64(d.fixed(8)) }

// skip discards n bytes without holding them.
func (d *ggufReader) skip(n uint64) {
	if d.err == nil && n > uint64(d.left()) {
		d.short(n)
	}
	if d.err != nil {
		return
	}
	k, err := d.br.Discard(int(n)) // n ≤ left ≤ MaxHeader fits an int
	d.n += int64(k)
	if err != nil {
		d.readErr(err)
	}
}

// key reads a key and reports whether it is want, keeping none of it.
func (d *ggufReader) key(want string) bool {
	n := d.u64()
	if d.err != nil || n != uint64(len(want)) || n > uint64(len(d.buf)) {
		d.skip(n)
		return false
	}
	return string(d.fixed(int(n))) == want
}

// name reads a tensor name, allocating only once its length is checked.
func (d *ggufReader) name() string {
	n := d.u64()
	if d.err == nil && n > ggufMaxName {
		d.err = fmt.Errorf("gguf: tensor name of %d bytes at offset %d exceeds %d", n, d.n-8, ggufMaxName)
	}
	if d.err == nil && n > uint64(d.left()) {
		d.short(n)
	}
	if d.err != nil {
		return ""
	}
	p := d.buf[:0]
	if n > uint64(len(d.buf)) {
		p = make([]byte, n)
	}
	p = p[:n]
	if _, err := io.ReadFull(d.br, p); err != nil {
		d.readErr(err)
		return ""
	}
	d.n += int64(n)
	return string(p)
}

// skipValue skips a metadata value of type typ.
func (d *ggufReader) skipValue(typ uint32) {
	if d.err != nil {
		return
	}
	if sz, ok := ggufScalarSize[typ]; ok {
		d.skip(sz)
		return
	}
	switch typ {
	case ggufString:
		d.skip(d.u64())
	case ggufArray:
		elem, count := d.u32(), d.u64()
		if d.err != nil {
			return
		}
		if sz, ok := ggufScalarSize[elem]; ok {
			if count > uint64(d.left())/sz { // so count × sz cannot overflow
				d.tooMany(count)
				return
			}
			if d.overMaxArray(count) {
				return
			}
			d.skip(count * sz)
			return
		}
		if elem != ggufString {
			d.err = fmt.Errorf("gguf: array of value type %d at offset %d is not supported", elem, d.n-12)
			return
		}
		// Each string is at least its 8-byte length.
		if count > uint64(d.left())/8 {
			d.tooMany(count)
			return
		}
		if d.overMaxArray(count) {
			return
		}
		for i := uint64(0); i < count && d.err == nil; i++ {
			d.skip(d.u64())
		}
	default:
		d.err = fmt.Errorf("gguf: unknown value type %d at offset %d", typ, d.n-4)
	}
}
