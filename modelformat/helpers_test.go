package modelformat

import (
	"cmp"
	"io"
	"slices"
	"testing"
)

// tensorRange is what most tests compare of a tensor.
type tensorRange struct {
	name     string
	off, len int64
}

func ranges(ts []Tensor) []tensorRange {
	out := make([]tensorRange, len(ts))
	for i, t := range ts {
		out[i] = tensorRange{t.Name, t.Offset, t.Length}
	}
	return out
}

func parseSafetensors(r io.ReaderAt, size, maxHeader int64) (int64, []Tensor, error) {
	h, err := ReadSafetensors(r, size, Options{MaxHeader: maxHeader})
	if err != nil {
		return 0, nil, err
	}
	return h.DataStart, h.Tensors, nil
}

func parseGGUF(r io.ReaderAt, size, maxHeader int64) (int64, []Tensor, error) {
	h, err := ReadGGUF(r, size, Options{MaxHeader: maxHeader})
	if err != nil {
		return 0, nil, err
	}
	return h.DataStart, h.Tensors, nil
}

// checkWithin fails unless the parsed header and tensors lie inside a file
// of size bytes, after the header, without overlapping.
func checkWithin(t *testing.T, hdr int64, ts []Tensor, size int64) {
	t.Helper()
	if hdr <= 0 || hdr > size {
		t.Fatalf("header length %d outside the %d-byte file", hdr, size)
	}
	sorted := slices.SortedFunc(slices.Values(ts), func(a, b Tensor) int {
		return cmp.Or(cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Length, b.Length))
	})
	end := hdr
	for _, r := range sorted {
		if r.Offset < end || r.Length < 0 || r.Offset+r.Length > size || r.Offset+r.Length < r.Offset {
			t.Fatalf("tensor %q [%d, +%d) outside [%d, %d) or overlapping", r.Name, r.Offset, r.Length, end, size)
		}
		end = r.Offset + r.Length
	}
}
