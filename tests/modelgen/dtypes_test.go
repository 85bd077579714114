package modelgen

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestWriteSafetensorsDtypes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dtypes.safetensors")
	specs := []TensorSpec{
		{"a.bf16", "BF16", []int64{3, 5}},
		{"b.f16", "F16", []int64{7}},
		{"c.f32", "F32", []int64{2, 2}},
		{"d.i8", "I8", []int64{9}},
		{"e.u8", "U8", []int64{1, 3}},
	}
	got, err := WriteSafetensors(path, specs, 3)
	if err != nil {
		t.Fatal(err)
	}
	parsed := parseFile(t, path)
	for i := range parsed {
		parsed[i].File = path
	}
	sortByOffset(parsed)
	if !reflect.DeepEqual(parsed, got) {
		t.Fatalf("parsed back:\n%+v\nwritten:\n%+v", parsed, got)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The F32 samples are N(0, 0.02): well inside ±0.2.
	f32 := got[2]
	for off := f32.Begin; off < f32.End; off += 4 {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(data[off:])); math.Abs(float64(v)) > 0.2 || v == 0 {
			t.Errorf("F32 sample %g at %d is not a plausible N(0, 0.02) draw", v, off)
		}
	}
	if _, err := WriteSafetensors(path, []TensorSpec{{"x", "F64", []int64{1}}}, 1); err == nil {
		t.Error("F64 was accepted; WriteSafetensors does not write it")
	}
}

func TestToF16(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800}, {65504, 0x7bff}, {1e6, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {6.103515625e-05, 0x0400}, // smallest normal
		{5.960464477539063e-08, 0x0001}, {1e-9, 0}, // smallest subnormal; underflow
		{1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02}, // ties to even
		{0.1, 0x2e66},
	} {
		if got := toF16(c.in); got != c.want {
			t.Errorf("toF16(%g) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := toF16(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("toF16(NaN) = %#04x, not a NaN", got)
	}
}
