package modelgen

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"
)

// MaxHeaderLen caps the JSON header ParseSafetensors will allocate. Real
// headers are well under 1 MiB even for models with tens of thousands of
// tensors; the cap stops a corrupt or hostile length from allocating GiBs.
const MaxHeaderLen = 100 << 20

// dtypeSizes maps the byte-addressable safetensors dtypes to their element
// size. Sub-byte types (F4, F6_*) are left out: nothing here produces them
// and their size rules are different.
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4,
	"U64": 8, "I64": 8, "F64": 8, "C64": 8,
}

// Tensor describes one tensor of a safetensors file.
type Tensor struct {
	Name  string
	DType string
	Shape []int64
	// File is the shard's path relative to the model directory. Generate sets
	// it; ParseSafetensors leaves it empty since it only sees a reader.
	File string
	// Begin and End are absolute offsets of the tensor's data in File
	// (header included), so End-Begin is the data size.
	Begin, End int64
}

// Size returns the tensor's data size in bytes.
func (t Tensor) Size() int64 { return t.End - t.Begin }

// ParseSafetensors reads and validates the header of a safetensors file of
// the given size and returns its tensors in header order.
//
// The layout is an 8-byte little-endian header length N, N bytes of JSON
// ({name: {"dtype", "shape", "data_offsets": [begin, end]}} plus an optional
// "__metadata__" string map, optionally padded with spaces), then the data;
// data_offsets are relative to the end of the header. Validation is strict:
// N is bounded by the file size and MaxHeaderLen before anything is
// allocated, the JSON must be a single object with no duplicate or unknown
// keys, dtypes must be known, shapes and offsets non-negative integers,
// end-begin must equal dtype size * prod(shape) (without overflow), and
// tensors must lie inside the file and not overlap. Gaps between tensors are
// allowed, since aligning writers may leave them.
func ParseSafetensors(r io.ReaderAt, size int64) ([]Tensor, error) {
	if size < 8 {
		return nil, fmt.Errorf("safetensors: file too small (%d bytes)", size)
	}
	var lenBuf [8]byte
	if err := readFullAt(r, lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	switch {
	case n > uint64(size-8):
		return nil, fmt.Errorf("safetensors: header length %d exceeds file size %d", n, size)
	case n > MaxHeaderLen:
		return nil, fmt.Errorf("safetensors: header length %d exceeds limit %d", n, MaxHeaderLen)
	case n < 2: // "{}" is the smallest valid header
		return nil, fmt.Errorf("safetensors: header length %d too small", n)
	}
	hdr := make([]byte, n)
	if err := readFullAt(r, hdr, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading header: %w", err)
	}
	dataStart := 8 + int64(n)
	return parseHeader(hdr, dataStart, size-dataStart)
}

// readFullAt is ReadAt that tolerates io.EOF when the buffer was filled, as
// the io.ReaderAt contract allows at the end of the input.
func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func parseHeader(hdr []byte, dataStart, dataLen int64) ([]Tensor, error) {
	// The format requires the header to start with '{'; checking it and
	// UTF-8 up front gives clearer errors than the JSON decoder would.
	if hdr[0] != '{' {
		return nil, errors.New("safetensors: header does not start with '{'")
	}
	if !utf8.Valid(hdr) {
		return nil, errors.New("safetensors: header is not valid UTF-8")
	}
	// A streaming decoder keeps the keys in file order (a map would lose it)
	// and lets us see duplicates.
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("safetensors: header JSON: %w", err)
	}
	var tensors []Tensor
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("safetensors: header JSON: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("safetensors: header JSON: unexpected %v", tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("safetensors: duplicate key %q", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("safetensors: header JSON for %q: %w", name, err)
		}
		if name == "__metadata__" {
			var md map[string]string
			if err := json.Unmarshal(raw, &md); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		t, err := parseEntry(name, raw, dataLen)
		if err != nil {
			return nil, err
		}
		t.Begin += dataStart
		t.End += dataStart
		tensors = append(tensors, t)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("safetensors: header JSON: %w", err)
	}
	// Only padding may follow the object.
	if rest := bytes.TrimLeft(hdr[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, errors.New("safetensors: trailing data after header JSON")
	}

	byOffset := make([]Tensor, len(tensors))
	copy(byOffset, tensors)
	sort.Slice(byOffset, func(i, j int) bool {
		if byOffset[i].Begin != byOffset[j].Begin {
			return byOffset[i].Begin < byOffset[j].Begin
		}
		return byOffset[i].End < byOffset[j].End
	})
	var maxEnd int64
	var last string
	for _, t := range byOffset {
		if t.Begin < maxEnd {
			return nil, fmt.Errorf("safetensors: tensors %q and %q overlap", last, t.Name)
		}
		maxEnd, last = t.End, t.Name
	}
	return tensors, nil
}

// parseEntry validates one tensor entry; offsets in the result are relative
// to the start of the data section.
func parseEntry(name string, raw json.RawMessage, dataLen int64) (Tensor, error) {
	if name == "" {
		return Tensor{}, errors.New("safetensors: empty tensor name")
	}
	fail := func(format string, args ...any) (Tensor, error) {
		return Tensor{}, fmt.Errorf("safetensors: tensor %q: "+format, append([]any{name}, args...)...)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return fail("entry is not an object")
	}
	for k := range fields {
		if k != "dtype" && k != "shape" && k != "data_offsets" {
			return fail("unknown field %q", k)
		}
	}
	var dtype string
	if err := json.Unmarshal(fields["dtype"], &dtype); err != nil || bytes.TrimSpace(fields["dtype"])[0] != '"' {
		return fail("missing or invalid dtype")
	}
	elemSize, ok := dtypeSizes[dtype]
	if !ok {
		return fail("unknown dtype %q", dtype)
	}
	shape, err := parseUints(fields["shape"])
	if err != nil {
		return fail("shape: %v", err)
	}
	offs, err := parseUints(fields["data_offsets"])
	if err != nil {
		return fail("data_offsets: %v", err)
	}
	if len(offs) != 2 {
		return fail("data_offsets has %d elements, want 2", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin > end || end > dataLen {
		return fail("data_offsets [%d, %d] outside data section of %d bytes", begin, end, dataLen)
	}
	// A zero dimension makes the tensor empty whatever the others are;
	// otherwise the product must not overflow.
	want := uint64(elemSize)
	if slices.Contains(shape, 0) {
		want = 0
	}
	for _, d := range shape {
		hi, lo := bits.Mul64(want, uint64(d))
		if hi != 0 || lo > 1<<62 {
			return fail("shape %v is too large", shape)
		}
		want = lo
	}
	if uint64(end-begin) != want {
		return fail("data size %d does not match %s%v (%d bytes)", end-begin, dtype, shape, want)
	}
	return Tensor{Name: name, DType: dtype, Shape: shape, Begin: begin, End: end}, nil
}

// parseUints decodes a JSON array of non-negative integers. Elements are
// parsed from their raw text so that strings, floats, exponents, negatives
// and null are all rejected rather than silently coerced.
func parseUints(raw json.RawMessage) ([]int64, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil || elems == nil {
		return nil, errors.New("not an array")
	}
	out := make([]int64, len(elems))
	for i, e := range elems {
		v, err := strconv.ParseUint(string(bytes.TrimSpace(e)), 10, 62)
		if err != nil {
			return nil, fmt.Errorf("element %d (%s) is not a non-negative integer", i, e)
		}
		out[i] = int64(v)
	}
	return out, nil
}

// encodeHeader builds a safetensors header for tensors whose offsets are
// relative to the data section, with keys sorted like the safetensors
// library writes them and padded with spaces so the data starts 8-aligned.
// It returns the full prefix: the 8-byte length plus the JSON.
func encodeHeader(tensors []Tensor, metadata map[string]string) []byte {
	sorted := make([]Tensor, len(tensors))
	copy(sorted, tensors)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })

	var b bytes.Buffer
	b.Write(make([]byte, 8)) // length, filled in below
	b.WriteByte('{')
	if metadata != nil {
		md, _ := json.Marshal(metadata) // map[string]string cannot fail
		b.WriteString(`"__metadata__":`)
		b.Write(md)
	}
	for i, t := range sorted {
		if i > 0 || metadata != nil {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(t.Name)
		b.Write(name)
		fmt.Fprintf(&b, `:{"dtype":%q,"shape":[`, t.DType)
		for j, d := range t.Shape {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, t.Begin, t.End)
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	out := b.Bytes()
	binary.LittleEndian.PutUint64(out, uint64(len(out)-8))
	return out
}
