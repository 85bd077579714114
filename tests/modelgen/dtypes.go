package modelgen

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
)

// TensorSpec is one tensor for WriteSafetensors.
type TensorSpec struct {
	Name  string
	DType string // BF16, F16, F32, I8 or U8
	Shape []int64
}

// WriteSafetensors writes one safetensors file at path holding specs, in
// that order, each filled with samples of N(0, 0.02) in its dtype (I8 and
// U8 as a symmetric quantisation with a scale of 0.02/40, U8 offset by
// 128), and returns the tensors as ParseSafetensors reads them back (with
// File set to path). The content is a pure function of the arguments.
//
// Unlike Generate, which writes bf16 only, this is for tests of code that
// treats dtypes differently; it is meant for files of tens of MiB.
func WriteSafetensors(path string, specs []TensorSpec, seed int64) ([]Tensor, error) {
	tensors := make([]Tensor, len(specs))
	var off int64
	for i, s := range specs {
		size, ok := dtypeSizes[s.DType]
		if !ok || !writable[s.DType] {
			return nil, fmt.Errorf("modelgen: WriteSafetensors: dtype %q is not supported", s.DType)
		}
		t := Tensor{Name: s.Name, DType: s.DType, Shape: s.Shape, File: path}
		t.Begin, t.End = off, off+numElems(s.Shape)*size
		tensors[i] = t
		off = t.End
	}
	prefix := encodeHeader(tensors, map[string]string{"format": "pt"})
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Write(prefix); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6474797065730000))
	for i := range tensors {
		t := &tensors[i]
		buf := make([]byte, t.Size())
		size := dtypeSizes[t.DType]
		for j := int64(0); j < t.Size(); j += size {
			putSample(buf[j:], t.DType, rng.NormFloat64()*0.02)
		}
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
		t.Begin += int64(len(prefix))
		t.End += int64(len(prefix))
	}
	return tensors, f.Close()
}

var writable = map[string]bool{"BF16": true, "F16": true, "F32": true, "I8": true, "U8": true}

// putSample encodes x as one element of dtype at the start of b.
func putSample(b []byte, dtype string, x float64) {
	q := math.Round(x / 0.02 * 40)
	switch dtype {
	case "BF16":
		binary.LittleEndian.PutUint16(b, toBF16(float32(x)))
	case "F16":
		binary.LittleEndian.PutUint16(b, toF16(float32(x)))
	case "F32":
		binary.LittleEndian.PutUint32(b, math.Float32bits(float32(x)))
	case "I8":
		b[0] = byte(int8(max(-127, min(127, q))))
	case "U8":
		b[0] = byte(max(0, min(255, q+128)))
	}
}

// toF16 converts to IEEE half precision, rounding to nearest even;
// values beyond its range become infinities, tiny ones subnormals or zero.
func toF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case exp >= 0x1f: // too big, or infinity
		return sign | 0x7c00
	case exp <= 0: // subnormal or zero
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		half := mant >> shift
		rest := mant & (1<<shift - 1)
		if mid := uint32(1) << (shift - 1); rest > mid || rest == mid && half&1 == 1 {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(exp)<<10 | mant>>13
	if rest := mant & 0x1fff; rest > 0x1000 || rest == 0x1000 && half&1 == 1 {
		half++ // may carry into the exponent, which is still correct
	}
	return sign | uint16(half)
}
