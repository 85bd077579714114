package modelformat

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/modelformat/formattest"
)

func TestSafetensorsParse(t *testing.T) {
	st := formattest.WriteSafetensors(t,
		formattest.SafetensorsTensor{Name: "b", DType: "BF16", Shape: []int64{3, 2}},
		formattest.SafetensorsTensor{Name: "a", DType: "F32", Shape: []int64{}},
		formattest.SafetensorsTensor{Name: "empty", DType: "F64", Shape: []int64{0, 5}},
		formattest.SafetensorsTensor{Name: "c", DType: "U8", Shape: []int64{5}},
	)
	hdr, ts, err := parseSafetensors(formattest.NewStrict(t, st.Data), int64(len(st.Data)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if hdr != st.Header {
		t.Errorf("header length %d, want %d", hdr, st.Header)
	}
	// Header order, absolute offsets: b [0,12), a [12,16), empty [16,16), c [16,21).
	want := []tensorRange{{"b", hdr, 12}, {"a", hdr + 12, 4}, {"empty", hdr + 16, 0}, {"c", hdr + 16, 5}}
	if fmt.Sprint(ranges(ts)) != fmt.Sprint(want) {
		t.Errorf("tensors %v, want %v", ranges(ts), want)
	}
}

// Packed sub-byte dtypes and padding or gaps between tensors, which the
// planner tolerates (it only fetches what the header names).
func TestSafetensorsSubByteAndGaps(t *testing.T) {
	data := formattest.RawSafetensors(`{"f4":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]},"f6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[8,11]}}  `, 16)
	hdr, ts, err := parseSafetensors(formattest.NewStrict(t, data), int64(len(data)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []tensorRange{{"f4", hdr, 3}, {"f6", hdr + 8, 3}}
	if fmt.Sprint(ranges(ts)) != fmt.Sprint(want) {
		t.Errorf("tensors %v, want %v", ranges(ts), want)
	}
}

// JSON the reference implementation accepts: escapes in names, unknown
// fields of any kind (skipped), null metadata, whitespace anywhere.
func TestSafetensorsJSONForms(t *testing.T) {
	data := formattest.RawSafetensors(" {\"__metadata__\" : null ,\n"+
		`"a\u00e9\ud83d\ude00\"\\\/\t" : {"x":{"y":[1,-2.5e+3,true,false,null,"s\u0000"]},"dtype":"U8","shape":[ 2 ],"data_offsets":[0 , 2]},`+
		`"b":{"data_offsets":[2,6],"shape":[],"dtype":"F32","z":[]}}   `, 6)
	hdr, ts, err := parseSafetensors(formattest.NewStrict(t, data), int64(len(data)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []tensorRange{{"a\u00e9\U0001F600\"\\/\t", hdr, 2}, {"b", hdr + 2, 4}}
	if fmt.Sprint(ranges(ts)) != fmt.Sprint(want) {
		t.Errorf("tensors %+v, want %+v", ranges(ts), want)
	}
}

func TestSafetensorsRejects(t *testing.T) {
	valid := formattest.WriteSafetensors(t, formattest.SafetensorsTensor{Name: "w", DType: "F32", Shape: []int64{2, 3}}).Data
	tests := []struct {
		name string
		data []byte
		size int64 // the size the file claims; 0: len(data)
		want string
	}{
		{"shorter than the length field", []byte{1, 2, 3}, 0, "shorter than"},
		{"header length beyond file", formattest.WithLength(valid, uint64(len(valid))), 0, "past the end"},
		{"huge header length", formattest.WithLength(valid, 1<<62), 0, "exceeds"},
		{"max uint64 header length", formattest.WithLength(valid, 1<<64-1), 0, "exceeds"},
		{"header over MaxHeader in a big file", formattest.WithLength(valid, 200<<20), 1 << 40, "exceeds"},
		{"header too short", formattest.WithLength(valid, 1), 0, "cannot hold"},
		{"end beyond data", formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,1000]}}`, 24), 0, "outside"},
		{"huge offsets", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}}`, 24), 0, "outside"},
		{"begin after end", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}}`, 24), 0, "outside"},
		{"negative offset", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, 24), 0, "not an unsigned integer"},
		{"fractional offset", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}}`, 24), 0, "not an unsigned integer"},
		{"offset past 64 bits", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}`, 24), 0, "overflows"},
		{"leading zero", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}`, 24), 0, "leading zero"},
		{"overlapping", formattest.RawSafetensors(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}}`, 32), 0, "overlap"},
		{"same range twice", formattest.RawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, 8), 0, "overlap"},
		{"empty inside another", formattest.RawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}`, 8), 0, "overlap"},
		{"bad dtype", formattest.RawSafetensors(`{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}`, 4), 0, "unknown dtype"},
		{"no dtype", formattest.RawSafetensors(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, 4), 0, "unknown dtype"},
		{"shape and size disagree", formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}`, 24), 0, "bits"},
		{"shape overflows", formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, 4), 0, "overflows"},
		{"bits overflow", formattest.RawSafetensors(`{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}}`, 4), 0, "overflows"},
		{"half a byte", formattest.RawSafetensors(`{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}`, 4), 0, "bits"},
		{"no shape", formattest.RawSafetensors(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, 4), 0, "no shape"},
		{"three offsets", formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8), 0, "want 2"},
		{"truncated JSON", formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_off`, 4), 0, "unexpected EOF"},
		{"truncated object", formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`, 4), 0, "unexpected EOF"},
		{"not an object", formattest.RawSafetensors(`[1,2,3]`, 4), 0, "not a JSON object"},
		{"not JSON", formattest.RawSafetensors(`PK\x03\x04junk`, 4), 0, "invalid character"},
		{"data after the object", formattest.RawSafetensors(`{} {}`, 4), 0, "after the header"},
		{"duplicate tensor", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 4), 0, "twice"},
		{"metadata not strings", formattest.RawSafetensors(`{"__metadata__":{"a":1}}`, 4), 0, "__metadata__"},
		{"entry not an object", formattest.RawSafetensors(`{"w":7}`, 4), 0, "not an object"},
		{"field twice", formattest.RawSafetensors(`{"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 4), 0, "twice"},
		{"shape not an array", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}}`, 4), 0, "not an array"},
		{"too many dimensions", formattest.RawSafetensors(`{"w":{"dtype":"U8","shape":[`+strings.Repeat("1,", 64)+`1],"data_offsets":[0,1]}}`, 4), 0, "more than 64 dimensions"},
		{"nested too deep", formattest.RawSafetensors(`{"w":{"x":`+strings.Repeat("[", 200)+strings.Repeat("]", 200)+`}}`, 4), 0, "nested"},
		{"name too long", formattest.RawSafetensors(`{"`+strings.Repeat("n", maxName+1)+`":{}}`, 4), 0, "longer than"},
		{"name not UTF-8", formattest.RawSafetensors("{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 4), 0, "UTF-8"},
		{"lone surrogate", formattest.RawSafetensors(`{"\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 4), 0, "surrogate"},
		{"control character", formattest.RawSafetensors("{\"a\nb\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 4), 0, "control character"},
		{"bad literal", formattest.RawSafetensors(`{"w":{"x":nul}}`, 4), 0, "invalid character"},
		{"bad number", formattest.RawSafetensors(`{"w":{"x":-}}`, 4), 0, "invalid character"},
		// The file claims 1 GiB and a 90 MiB header, but holds a few bytes:
		// parsing must fail on the missing bytes, not allocate 90 MiB.
		{"claimed header not there", formattest.WithLength(formattest.RawSafetensors(`{"w":{"dtype":"F32"`, 0), 90<<20), 1 << 30, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := formattest.NewStrict(t, tt.data)
			if tt.size != 0 {
				r.Size = tt.size
			}
			var err error
			alloc := formattest.Allocated(func() { _, _, err = parseSafetensors(r, r.Size, 100<<20) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if alloc > 4<<20 {
				t.Errorf("rejecting it allocated %d bytes", alloc)
			}
		})
	}
}

func FuzzSafetensorsHeader(f *testing.F) {
	f.Add(formattest.WriteSafetensors(f,
		formattest.SafetensorsTensor{Name: "model.embed_tokens.weight", DType: "BF16", Shape: []int64{4, 2}},
		formattest.SafetensorsTensor{Name: "model.layers.0.w", DType: "F32", Shape: []int64{3}},
	).Data)
	f.Add(formattest.WriteSafetensors(f).Data)
	f.Add(formattest.RawSafetensors(`{"f4":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]},"f6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[8,11]}}`, 16))
	f.Add(formattest.RawSafetensors(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}}`, 32))
	f.Add(formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, 4))
	f.Add(formattest.RawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_off`, 4))
	f.Add(formattest.WithLength(formattest.WriteSafetensors(f, formattest.SafetensorsTensor{Name: "w", DType: "U8", Shape: []int64{1}}).Data, 1<<62))
	f.Add([]byte{})
	f.Add(hostileSafetensors("shapes", 4<<10))
	f.Add(hostileSafetensors("tensors", 4<<10))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		var hdr int64
		var ts []Tensor
		var err error
		alloc := formattest.Allocated(func() { hdr, ts, err = parseSafetensors(formattest.NewStrict(t, data), size, 1<<20) })
		if limit := stAllocBound(len(data), true); alloc > limit {
			t.Fatalf("parsing %d bytes allocated %d, over the bound of %d", len(data), alloc, limit)
		}
		compareWithEncodingJSON(t, data, ts, err)
		if err != nil {
			return
		}
		checkWithin(t, hdr, ts, size)
	})
}

// compareWithEncodingJSON checks the streaming parser against a decode of
// the whole header with encoding/json: both accept the same headers, with
// the same tensors, except where the streaming parser is stricter on
// purpose (its bounds; invalid UTF-8, lone surrogates and repeated fields,
// which the reference implementation rejects too).
func compareWithEncodingJSON(t *testing.T, data []byte, got []Tensor, err error) {
	t.Helper()
	if len(data) < 8 {
		return
	}
	n := binary.LittleEndian.Uint64(data)
	if n < 2 || n > uint64(len(data)-8) {
		return
	}
	hdr := 8 + int64(n)
	var entries map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(string(data[8:hdr])))
	jerr := dec.Decode(&entries)
	if jerr == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			jerr = errors.New("data after the object")
		}
	}
	var want []Tensor
	for name, raw := range entries {
		if jerr != nil {
			break
		}
		if name == "__metadata__" {
			var meta map[string]string
			jerr = json.Unmarshal(raw, &meta)
			continue
		}
		var info struct {
			Dtype       string   `json:"dtype"`
			Shape       []uint64 `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		if jerr = json.Unmarshal(raw, &info); jerr == nil && (info.Shape == nil || len(info.DataOffsets) != 2 || stDTypes[info.Dtype].bits == 0) {
			jerr = errors.New("incomplete entry")
		}
		if jerr == nil {
			want = append(want, Tensor{Name: name, DType: info.Dtype, Shape: info.Shape, Offset: hdr + int64(info.DataOffsets[0]), Length: int64(info.DataOffsets[1] - info.DataOffsets[0])})
		}
	}
	switch {
	case jerr != nil && err == nil:
		t.Fatalf("accepted a header encoding/json rejects (%v): %q", jerr, data[8:hdr])
	case jerr == nil && err != nil:
		// Either the entries fail a check both make, or a deliberate
		// strictness of the streaming parser.
		for _, why := range []string{"UTF-8", "surrogate", "twice", "more than", "longer than", "nested", "dtype", "data_offsets", "shape", "bits", "overlap", "outside"} {
			if strings.Contains(err.Error(), why) {
				return
			}
		}
		t.Fatalf("rejected a header encoding/json accepts: %v: %q", err, data[8:hdr])
	case jerr == nil:
		sortByName := func(ts []Tensor) []Tensor {
			ts = slices.Clone(ts)
			slices.SortFunc(ts, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })
			return ts
		}
		if g, w := fmt.Sprint(sortByName(got)), fmt.Sprint(sortByName(want)); g != w {
			t.Fatalf("tensors %s, encoding/json finds %s", g, w)
		}
	}
}

// stAllocBound is the most parsing a safetensors file of n bytes may
// allocate: a small multiple of what it holds, whatever its header says.
// Shapes (8 bytes a dimension for the 2 bytes of "1,") cost one more.
func stAllocBound(n int, shapes bool) uint64 {
	if shapes {
		return 4*uint64(n) + 64<<10
	}
	return 3*uint64(n) + 64<<10
}

// hostileSafetensors returns a valid file with a header of about n bytes
// built to make a parser allocate: shapes of many dimensions, as many
// tensors as fit, one huge metadata string, or big unknown values.
func hostileSafetensors(kind string, n int) []byte {
	var h strings.Builder
	h.WriteString("{")
	tensors := 0
	switch kind {
	case "shapes":
		shape := "[1" + strings.Repeat(",1", stMaxDims-1) + "]"
		for ; h.Len() < n; tensors++ {
			fmt.Fprintf(&h, `"t%d":{"dtype":"U8","shape":%s,"data_offsets":[%d,%d]},`, tensors, shape, tensors, tensors+1)
		}
	case "tensors":
		for ; h.Len() < n; tensors++ {
			fmt.Fprintf(&h, `"%x":{"shape":[],"dtype":"U8","data_offsets":[%d,%d]},`, tensors, tensors, tensors+1)
		}
	case "metadata":
		fmt.Fprintf(&h, `"__metadata__":{"k":"%s"},`, strings.Repeat("m", n))
	case "unknown":
		fmt.Fprintf(&h, `"w":{"x":[%s0],"dtype":"U8","shape":[],"data_offsets":[0,1]},`, strings.Repeat("12345678,", n/9))
		tensors = 1
	}
	hdr := strings.TrimSuffix(h.String(), ",") + "}"
	return formattest.RawSafetensors(hdr, tensors)
}

// A maximal hostile header, valid or over a bound, is parsed within a
// small multiple of its size, and keeps only names and offsets.
func TestSafetensorsHostileHeaderMemory(t *testing.T) {
	const n = 4 << 20
	for _, kind := range []string{"shapes", "tensors", "metadata", "unknown", "too many"} {
		t.Run(kind, func(t *testing.T) {
			var data []byte
			if kind == "too many" {
				data = hostileSafetensors("tensors", maxTensors*72)
			} else {
				data = hostileSafetensors(kind, n)
			}
			modes := []bool{false}
			if kind == "shapes" {
				modes = []bool{true, false} // where keeping them costs most
			}
			for _, noShapes := range modes {
				var h *Header
				var err error
				alloc := formattest.Allocated(func() {
					h, err = ReadSafetensors(formattest.NewStrict(t, data), int64(len(data)), Options{MaxHeader: 100 << 20, NoShapes: noShapes})
				})
				if kind == "too many" {
					if err == nil || !strings.Contains(err.Error(), "more than") {
						t.Fatalf("error %v, want too many tensors", err)
					}
				} else if err != nil {
					t.Fatal(err)
				} else if len(h.Tensors) > 0 && (h.Tensors[0].Shape == nil) != noShapes {
					t.Fatalf("NoShapes %v, but a shape of %v", noShapes, h.Tensors[0].Shape)
				}
				t.Logf("NoShapes %v: %d-byte header: allocated %d bytes (%.2fx)", noShapes, len(data), alloc, float64(alloc)/float64(len(data)))
				if limit := stAllocBound(len(data), !noShapes); alloc > limit {
					t.Errorf("parsing allocated %d bytes, over the bound of %d", alloc, limit)
				}
			}
		})
	}
}
