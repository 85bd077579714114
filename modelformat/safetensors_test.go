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
)

type stTensor struct {
	name  string
	dtype string
	shape []int64
}

// stFile is a written safetensors file and where its parts lie.
type stFile struct {
	data []byte
	hdr  int64               // 8 + header length
	offs map[string][2]int64 // absolute [begin, end) of each tensor
}

var stTestBytes = map[string]int64{"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "U8": 1, "F64": 8}

// writeSafetensors writes tensors in the given order, with the header
// listing them in the same order (a map would sort them) and padded with
// spaces to 8 bytes as the reference writer does.
func writeSafetensors(tb testing.TB, tensors ...stTensor) stFile {
	tb.Helper()
	var hdr strings.Builder
	hdr.WriteString(`{"__metadata__":{"format":"pt"}`)
	f := stFile{offs: map[string][2]int64{}}
	var off int64
	for _, t := range tensors {
		n, ok := stTestBytes[t.dtype]
		if !ok {
			tb.Fatalf("test writer lacks dtype %s", t.dtype)
		}
		for _, d := range t.shape {
			n *= d
		}
		name, _ := json.Marshal(t.name)
		shape, _ := json.Marshal(t.shape)
		fmt.Fprintf(&hdr, `,%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, t.dtype, shape, off, off+n)
		f.offs[t.name] = [2]int64{off, off + n}
		off += n
	}
	hdr.WriteString("}")
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	f.hdr = 8 + int64(hdr.Len())
	for k, o := range f.offs {
		f.offs[k] = [2]int64{o[0] + f.hdr, o[1] + f.hdr}
	}
	f.data = binary.LittleEndian.AppendUint64(nil, uint64(hdr.Len()))
	f.data = append(f.data, hdr.String()...)
	for i := range off {
		f.data = append(f.data, byte(i))
	}
	return f
}

// rawSafetensors is header as the JSON, followed by dataLen bytes.
func rawSafetensors(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// withLength replaces the header length of a file.
func withLength(b []byte, n uint64) []byte {
	b = append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(b, n)
	return b
}

func TestSafetensorsParse(t *testing.T) {
	st := writeSafetensors(t,
		stTensor{name: "b", dtype: "BF16", shape: []int64{3, 2}},
		stTensor{name: "a", dtype: "F32", shape: []int64{}},
		stTensor{name: "empty", dtype: "F64", shape: []int64{0, 5}},
		stTensor{name: "c", dtype: "U8", shape: []int64{5}},
	)
	hdr, ts, err := parseSafetensors(newStrict(t, st.data), int64(len(st.data)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if hdr != st.hdr {
		t.Errorf("header length %d, want %d", hdr, st.hdr)
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
	data := rawSafetensors(`{"f4":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]},"f6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[8,11]}}  `, 16)
	hdr, ts, err := parseSafetensors(newStrict(t, data), int64(len(data)), 1<<20)
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
	data := rawSafetensors(" {\"__metadata__\" : null ,\n"+
		`"a\u00e9\ud83d\ude00\"\\\/\t" : {"x":{"y":[1,-2.5e+3,true,false,null,"s\u0000"]},"dtype":"U8","shape":[ 2 ],"data_offsets":[0 , 2]},`+
		`"b":{"data_offsets":[2,6],"shape":[],"dtype":"F32","z":[]}}   `, 6)
	hdr, ts, err := parseSafetensors(newStrict(t, data), int64(len(data)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []tensorRange{{"a\u00e9\U0001F600\"\\/\t", hdr, 2}, {"b", hdr + 2, 4}}
	if fmt.Sprint(ranges(ts)) != fmt.Sprint(want) {
		t.Errorf("tensors %+v, want %+v", ranges(ts), want)
	}
}

func TestSafetensorsRejects(t *testing.T) {
	valid := writeSafetensors(t, stTensor{name: "w", dtype: "F32", shape: []int64{2, 3}}).data
	tests := []struct {
		name string
		data []byte
		size int64 // the size the file claims; 0: len(data)
		want string
	}{
		{"shorter than the length field", []byte{1, 2, 3}, 0, "shorter than"},
		{"header length beyond file", withLength(valid, uint64(len(valid))), 0, "past the end"},
		{"huge header length", withLength(valid, 1<<62), 0, "exceeds"},
		{"max uint64 header length", withLength(valid, 1<<64-1), 0, "exceeds"},
		{"header over MaxHeader in a big file", withLength(valid, 200<<20), 1 << 40, "exceeds"},
		{"header too short", withLength(valid, 1), 0, "cannot hold"},
		{"end beyond data", rawSafetensors(`{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,1000]}}`, 24), 0, "outside"},
		{"huge offsets", rawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}}`, 24), 0, "outside"},
		{"begin after end", rawSafetensors(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}}`, 24), 0, "outside"},
		{"negative offset", rawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, 24), 0, "not an unsigned integer"},
		{"fractional offset", rawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}}`, 24), 0, "not an unsigned integer"},
		{"offset past 64 bits", rawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}`, 24), 0, "overflows"},
		{"leading zero", rawSafetensors(`{"w":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}`, 24), 0, "leading zero"},
		{"overlapping", rawSafetensors(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}}`, 32), 0, "overlap"},
		{"same range twice", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, 8), 0, "overlap"},
		{"empty inside another", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}`, 8), 0, "overlap"},
		{"bad dtype", rawSafetensors(`{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}`, 4), 0, "unknown dtype"},
		{"no dtype", rawSafetensors(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, 4), 0, "unknown dtype"},
		{"shape and size disagree", rawSafetensors(`{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}`, 24), 0, "bits"},
		{"shape overflows", rawSafetensors(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, 4), 0, "overflows"},
		{"bits overflow", rawSafetensors(`{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}}`, 4), 0, "overflows"},
		{"half a byte", rawSafetensors(`{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}`, 4), 0, "bits"},
		{"no shape", rawSafetensors(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, 4), 0, "no shape"},
		{"three offsets", rawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8), 0, "want 2"},
		{"truncated JSON", rawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_off`, 4), 0, "unexpected EOF"},
		{"truncated object", rawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`, 4), 0, "unexpected EOF"},
		{"not an object", rawSafetensors(`[1,2,3]`, 4), 0, "not a JSON object"},
		{"not JSON", rawSafetensors(`PK\x03\x04junk`, 4), 0, "invalid character"},
		{"data after the object", rawSafetensors(`{} {}`, 4), 0, "after the header"},
		{"duplicate tensor", rawSafetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 4), 0, "twice"},
		{"metadata not strings", rawSafetensors(`{"__metadata__":{"a":1}}`, 4), 0, "__metadata__"},
		{"entry not an object", rawSafetensors(`{"w":7}`, 4), 0, "not an object"},
		{"field twice", rawSafetensors(`{"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 4), 0, "twice"},
		{"shape not an array", rawSafetensors(`{"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}}`, 4), 0, "not an array"},
		{"too many dimensions", rawSafetensors(`{"w":{"dtype":"U8","shape":[`+strings.Repeat("1,", 64)+`1],"data_offsets":[0,1]}}`, 4), 0, "more than 64 dimensions"},
		{"nested too deep", rawSafetensors(`{"w":{"x":`+strings.Repeat("[", 200)+strings.Repeat("]", 200)+`}}`, 4), 0, "nested"},
		{"name too long", rawSafetensors(`{"`+strings.Repeat("n", maxName+1)+`":{}}`, 4), 0, "longer than"},
		{"name not UTF-8", rawSafetensors("{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 4), 0, "UTF-8"},
		{"lone surrogate", rawSafetensors(`{"\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 4), 0, "surrogate"},
		{"control character", rawSafetensors("{\"a\nb\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 4), 0, "control character"},
		{"bad literal", rawSafetensors(`{"w":{"x":nul}}`, 4), 0, "invalid character"},
		{"bad number", rawSafetensors(`{"w":{"x":-}}`, 4), 0, "invalid character"},
		// The file claims 1 GiB and a 90 MiB header, but holds a few bytes:
		// parsing must fail on the missing bytes, not allocate 90 MiB.
		{"claimed header not there", withLength(rawSafetensors(`{"w":{"dtype":"F32"`, 0), 90<<20), 1 << 30, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newStrict(t, tt.data)
			if tt.size != 0 {
				r.size = tt.size
			}
			var err error
			alloc := allocated(func() { _, _, err = parseSafetensors(r, r.size, 100<<20) })
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
	f.Add(writeSafetensors(f,
		stTensor{name: "model.embed_tokens.weight", dtype: "BF16", shape: []int64{4, 2}},
		stTensor{name: "model.layers.0.w", dtype: "F32", shape: []int64{3}},
	).data)
	f.Add(writeSafetensors(f).data)
	f.Add(rawSafetensors(`{"f4":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]},"f6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[8,11]}}`, 16))
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}}`, 32))
	f.Add(rawSafetensors(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, 4))
	f.Add(rawSafetensors(`{"w":{"dtype":"F32","shape":[1],"data_off`, 4))
	f.Add(withLength(writeSafetensors(f, stTensor{name: "w", dtype: "U8", shape: []int64{1}}).data, 1<<62))
	f.Add([]byte{})
	f.Add(hostileSafetensors("shapes", 4<<10))
	f.Add(hostileSafetensors("tensors", 4<<10))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		var hdr int64
		var ts []Tensor
		var err error
		alloc := allocated(func() { hdr, ts, err = parseSafetensors(newStrict(t, data), size, 1<<20) })
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
	return rawSafetensors(hdr, tensors)
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
				alloc := allocated(func() {
					h, err = ReadSafetensors(newStrict(t, data), int64(len(data)), Options{MaxHeader: 100 << 20, NoShapes: noShapes})
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
