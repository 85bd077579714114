package modelformat

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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
	// ggufMaxName bounds a tensor name. llama.cpp rejects names of 64
	// bytes or more; this leaves room for other writers while bounding
	// what one name can allocate.
	ggufMaxName = maxName
	// Smallest encodings, which bound how many entries a header can hold.
	ggufMinKV     = 8 + 4 + 1     // empty key, type, one-byte value
	ggufMinTensor = 8 + 4 + 4 + 8 // empty name, no dims, type, offset
	// Counts are bounded beyond what the header's bytes allow, so that a
	// hostile header costs little time as well as little memory. Real
	// files have tens of keys, hundreds to a few thousand tensors and
	// arrays (vocabularies, merges) of at most about a million entries.
	ggufMaxKV      = 1 << 16
	ggufMaxTensors = maxTensors
	ggufMaxArray   = 1 << 24
	// ggufTensorCost is what parsing keeps per tensor besides its name:
	// the Tensor and its shape.
	ggufTensorCost = 112
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

// ggmlType is one ggml tensor type: its name and storage, elements per
// block and bytes per block (ggml's blck_size and type_size).
type ggmlType struct {
	name         string
	block, bytes uint64
}

// ggmlTypes lists the types ggml defines; the numbers are ggml_type's.
// A tensor of a type not listed is bounded by the next tensor instead.
var ggmlTypes = map[uint32]ggmlType{
	0:  {"F32", 1, 4},
	1:  {"F16", 1, 2},
	2:  {"Q4_0", 32, 18},
	3:  {"Q4_1", 32, 20},
	6:  {"Q5_0", 32, 22},
	7:  {"Q5_1", 32, 24},
	8:  {"Q8_0", 32, 34},
	9:  {"Q8_1", 32, 36},
	10: {"Q2_K", 256, 84},
	11: {"Q3_K", 256, 110},
	12: {"Q4_K", 256, 144},
	13: {"Q5_K", 256, 176},
	14: {"Q6_K", 256, 210},
	15: {"Q8_K", 256, 292},
	16: {"IQ2_XXS", 256, 66},
	17: {"IQ2_XS", 256, 74},
	18: {"IQ3_XXS", 256, 98},
	19: {"IQ1_S", 256, 50},
	20: {"IQ4_NL", 32, 18},
	21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82},
	23: {"IQ4_XS", 256, 136},
	24: {"I8", 1, 1},
	25: {"I16", 1, 2},
	26: {"I32", 1, 4},
	27: {"I64", 1, 8},
	28: {"F64", 1, 8},
	29: {"IQ1_M", 256, 56},
	30: {"BF16", 1, 2},
	34: {"TQ1_0", 256, 54},
	35: {"TQ2_0", 256, 66},
	39: {"MXFP4", 32, 17},
}

// GGMLType returns the number of the ggml type named name ("BF16",
// "Q4_K"), for writers; ok is false for a name this package lacks.
func GGMLType(name string) (typ uint32, ok bool) {
	for k, t := range ggmlTypes {
		if t.name == name {
			return k, true
		}
	}
	return 0, false
}

// GGMLTypeSize is the storage of a ggml type: bytes per block of
// elements; ok is false for a type this package lacks.
func GGMLTypeSize(typ uint32) (elems, bytes uint64, ok bool) {
	t, ok := ggmlTypes[typ]
	return t.block, t.bytes, ok
}

// GGUFWeight is what parsing the header of a GGUF file may hold at most,
// from the tensor count it states: what each tensor keeps, up to the bytes
// the header may have. It reads 24 bytes, so callers can size what parsing
// will cost before they commit to it; it is 0 if the file is not GGUF.
func GGUFWeight(r io.ReaderAt, size int64, opts Options) int64 {
	var b [24]byte
	if n, _ := r.ReadAt(b[:], 0); n < len(b) || string(b[:4]) != "GGUF" {
		return 0
	}
	tensors := min(binary.LittleEndian.Uint64(b[8:]), ggufMaxTensors)
	return min(size, opts.maxHeader(), int64(tensors)*(ggufTensorCost+ggufMaxName))
}

// ReadGGUF parses the header of a GGUF file (v2 or v3) of the given size.
// The header is read in bounded chunks, at most Options.MaxHeader bytes of
// it; every count and length is checked against the bytes left before it
// is used, and metadata values are skipped unread unless
// Options.GGUFKeys names them.
func ReadGGUF(r io.ReaderAt, size int64, opts Options) (*Header, error) {
	limit := min(size, opts.maxHeader())
	d := &ggufReader{
		br:     bufio.NewReaderSize(io.NewSectionReader(r, 0, limit), int(min(max(limit, 16), 64<<10))),
		limit:  limit,
		capped: limit < size,
	}
	if magic := d.fixed(4); d.err == nil && string(magic) != "GGUF" {
		return nil, fmt.Errorf("gguf: bad magic %q", magic)
	}
	version := d.u32()
	switch v := version; {
	case d.err != nil:
	case v == 2 || v == 3: // v1 had 32-bit counts and is long gone
	case bits.ReverseBytes32(v) == 2 || bits.ReverseBytes32(v) == 3:
		return nil, errors.New("gguf: big-endian files are not supported")
	default:
		return nil, fmt.Errorf("gguf: version %d is not supported", v)
	}
	nTensors, nKV := d.u64(), d.u64()
	if d.err == nil && (nTensors > uint64(d.left())/ggufMinTensor || nKV > uint64(d.left())/ggufMinKV) {
		return nil, fmt.Errorf("gguf: %d tensors and %d keys cannot fit in %d header bytes", nTensors, nKV, d.left())
	}
	if d.err == nil && (nTensors > ggufMaxTensors || nKV > ggufMaxKV) {
		return nil, fmt.Errorf("gguf: %d tensors and %d keys: more than the %d tensors or %d keys accepted", nTensors, nKV, ggufMaxTensors, ggufMaxKV)
	}

	h := &Header{Format: GGUF, Version: version}
	align := uint64(ggufDefaultAlignment)
	for i := uint64(0); i < nKV && d.err == nil; i++ {
		// Only general.alignment and the keys asked for matter, so other
		// values are skipped, not read into memory.
		key, isAlign := d.key("general.alignment", opts.GGUFKeys)
		typ := d.u32()
		if key == "" {
			d.skipValue(typ)
			continue
		}
		if isAlign && d.err == nil && typ != ggufUint32 {
			return nil, fmt.Errorf("gguf: general.alignment has value type %d, want uint32", typ)
		}
		v := d.value(typ)
		if d.err != nil {
			break
		}
		if isAlign {
			a := v.(uint32)
			if a == 0 || a&(a-1) != 0 {
				return nil, fmt.Errorf("gguf: general.alignment %d is not a power of two", a)
			}
			align = uint64(a)
		}
		if slices.Contains(opts.GGUFKeys, key) {
			if h.Metadata == nil {
				h.Metadata = map[string]any{}
			}
			h.Metadata[key] = v
		}
	}

	// Tensors are kept with their offsets relative to the data section
	// and length -1 for a type ggml lacks until the section's start is
	// known. The count was bounded by the header's bytes above, so one
	// allocation for all of them is within a small multiple of those.
	if d.err != nil {
		return nil, d.err
	}
	if nTensors > chunkLen {
		// The count fits the bytes the file claims; before allocating for
		// it, check that the bytes are there.
		var b [1]byte
		end := d.n + int64(nTensors)*ggufMinTensor // ≤ limit, checked above
		if n, err := r.ReadAt(b[:], end-1); n < 1 {
			return nil, fmt.Errorf("gguf: %d tensor infos need %d header bytes from offset %d: %w", nTensors, end-d.n, d.n, noEOF(err))
		}
	}
	infos := make([]Tensor, 0, nTensors)
	var kept shapes
	for i := uint64(0); i < nTensors && d.err == nil; i++ {
		name := d.name()
		nDims := d.u32()
		if d.err == nil && nDims > ggufMaxDims {
			return nil, fmt.Errorf("gguf: tensor %q has %d dims, more than %d", name, nDims, ggufMaxDims)
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
			return nil, fmt.Errorf("gguf: tensor %q at offset %d is past the end of the %d-byte file", name, offset, size)
		}
		t := Tensor{Name: name, DType: "unknown", Offset: int64(offset), Length: -1}
		if gt, ok := ggmlTypes[typ]; ok {
			n, err := ggmlBytes(dims[:nDims], gt)
			if err != nil {
				return nil, fmt.Errorf("gguf: tensor %q: %w", name, err)
			}
			t.DType, t.Length = gt.name, int64(n) // ≤ 2^62
		}
		if !opts.NoShapes {
			t.Shape = kept.keep(dims[:nDims])
		}
		infos = append(infos, t)
	}
	if d.err != nil {
		return nil, d.err
	}

	// d.n < 2^63 and align ≤ 2^31, so this cannot overflow.
	dataStart := (uint64(d.n) + align - 1) / align * align
	h.Alignment = int64(align)
	if dataStart > uint64(size) {
		if len(infos) > 0 {
			return nil, fmt.Errorf("gguf: data section starts at %d, past the end of the %d-byte file", dataStart, size)
		}
		h.DataStart = size
		return h, nil
	}
	if err := ggufRanges(infos, int64(dataStart), uint64(size)-dataStart, align); err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	h.DataStart, h.Tensors = int64(dataStart), infos
	return h, nil
}

// ggufRanges checks each tensor as parsed (offset relative to the data
// section, length -1 for an unknown type) against the dataLen bytes of the
// data section, and turns it into its absolute range, in place.
func ggufRanges(ts []Tensor, dataStart int64, dataLen, align uint64) error {
	// Offsets in ascending order bound tensors of types the table lacks.
	var offs []int64
	if slices.ContainsFunc(ts, func(t Tensor) bool { return t.Length < 0 }) {
		offs = make([]int64, len(ts))
		for i, t := range ts {
			offs[i] = t.Offset
		}
		slices.Sort(offs)
	}
	for i := range ts {
		t := &ts[i]
		off := uint64(t.Offset)
		if off%align != 0 {
			return fmt.Errorf("tensor %q at offset %d is not %d-aligned", t.Name, off, align)
		}
		if off > dataLen {
			return fmt.Errorf("tensor %q at offset %d is past the %d data bytes", t.Name, off, dataLen)
		}
		if t.Length >= 0 {
			if uint64(t.Length) > dataLen-off {
				return fmt.Errorf("tensor %q [%d, +%d) runs past the %d data bytes", t.Name, off, t.Length, dataLen)
			}
		} else {
			// Unknown type: all it can hold is up to the next tensor.
			next := dataLen
			if k, _ := slices.BinarySearch(offs, t.Offset+1); k < len(offs) {
				next = uint64(offs[k])
			}
			t.Length = int64(next - off)
		}
		t.Offset += dataStart
	}
	if err := checkDuplicates(ts); err != nil {
		return err
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

// key reads a key. It reports whether it is align, and returns it if it
// is align or one of keep; it keeps nothing of any other, and reads into
// memory only keys as long as one of those.
func (d *ggufReader) key(align string, keep []string) (string, bool) {
	n := d.u64()
	if d.err != nil {
		return "", false
	}
	sameLen := func(k string) bool { return uint64(len(k)) == n }
	if !sameLen(align) && !slices.ContainsFunc(keep, sameLen) {
		d.skip(n)
		return "", false
	}
	if n > uint64(d.left()) {
		d.short(n)
		return "", false
	}
	var p []byte
	if n <= uint64(len(d.buf)) {
		p = d.fixed(int(n))
	} else {
		p = make([]byte, n) // as long as a key the caller named
		if _, err := io.ReadFull(d.br, p); err != nil {
			d.readErr(err)
			return "", false
		}
		d.n += int64(n)
	}
	if d.err != nil {
		return "", false
	}
	if string(p) == align {
		return align, true
	}
	if i := slices.Index(keep, string(p)); i >= 0 {
		return keep[i], false
	}
	return "", false
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

// value reads a metadata value of type typ as a Go value: the scalar
// types as themselves, a string as a string, an array as []any. Lengths
// are checked against the header's bytes before anything is allocated.
func (d *ggufReader) value(typ uint32) any {
	if d.err != nil {
		return nil
	}
	switch typ {
	case ggufUint8:
		return d.fixed(1)[0]
	case ggufInt8:
		return int8(d.fixed(1)[0])
	case ggufBool:
		return d.fixed(1)[0] != 0
	case ggufUint16:
		return binary.LittleEndian.Uint16(d.fixed(2))
	case ggufInt16:
		return int16(binary.LittleEndian.Uint16(d.fixed(2)))
	case ggufUint32:
		return d.u32()
	case ggufInt32:
		return int32(d.u32())
	case ggufFloat32:
		return math.Float32frombits(d.u32())
	case ggufUint64:
		return d.u64()
	case ggufInt64:
		return int64(d.u64())
	case ggufFloat64:
		return math.Float64frombits(d.u64())
	case ggufString:
		return d.str()
	case ggufArray:
		elem, count := d.u32(), d.u64()
		if d.err != nil {
			return nil
		}
		sz, ok := ggufScalarSize[elem]
		if !ok && elem != ggufString {
			d.err = fmt.Errorf("gguf: array of value type %d at offset %d is not supported", elem, d.n-12)
			return nil
		}
		if !ok {
			sz = 8 // each string is at least its length
		}
		if count > uint64(d.left())/sz {
			d.tooMany(count)
			return nil
		}
		if d.overMaxArray(count) {
			return nil
		}
		out := make([]any, 0, count)
		for i := uint64(0); i < count && d.err == nil; i++ {
			out = append(out, d.value(elem))
		}
		return out
	}
	d.err = fmt.Errorf("gguf: unknown value type %d at offset %d", typ, d.n-4)
	return nil
}

// str reads a string value, allocating only once its length is checked.
func (d *ggufReader) str() string {
	n := d.u64()
	if d.err == nil && n > uint64(d.left()) {
		d.short(n)
	}
	if d.err != nil {
		return ""
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(d.br, p); err != nil {
		d.readErr(err)
		return ""
	}
	d.n += int64(n)
	return string(p)
}
