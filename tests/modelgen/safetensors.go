package modelgen

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"

	"github.com/modelfs/modelfs/modelformat"
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
// the given size with modelformat and returns its tensors in header order.
//
// The layout is an 8-byte little-endian header length N, N bytes of JSON
// ({name: {"dtype", "shape", "data_offsets": [begin, end]}} plus an optional
// "__metadata__" string map, optionally padded with spaces), then the data;
// data_offsets are relative to the end of the header. N is bounded by the
// file size and MaxHeaderLen before anything is allocated; the JSON must be
// a single object with no duplicate tensor, dtypes must be known, shapes and
// offsets non-negative integers, end-begin must equal the dtype's size times
// prod(shape) (without overflow), and tensors must lie inside the file and
// not overlap. Gaps between tensors are allowed, since aligning writers may
// leave them; unknown fields are skipped, as the reference implementation
// does.
func ParseSafetensors(r io.ReaderAt, size int64) ([]Tensor, error) {
	h, err := modelformat.ReadSafetensors(r, size, modelformat.Options{MaxHeader: MaxHeaderLen})
	if err != nil {
		return nil, err
	}
	out := make([]Tensor, len(h.Tensors))
	for i, t := range h.Tensors {
		shape := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			if d > math.MaxInt64 {
				return nil, fmt.Errorf("safetensors: tensor %q: dimension %d does not fit an int64", t.Name, d)
			}
			shape[j] = int64(d)
		}
		out[i] = Tensor{Name: t.Name, DType: t.DType, Shape: shape, Begin: t.Offset, End: t.Offset + t.Length}
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
