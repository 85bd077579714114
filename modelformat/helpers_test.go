package modelformat

import (
	"cmp"
	"errors"
	"io"
	"runtime"
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

// strictReader is a file that fails the test on a read outside it or of
// more than maxRead bytes at once.
type strictReader struct {
	tb   testing.TB
	data []byte
	size int64
}

const maxRead = 1 << 20

func newStrict(tb testing.TB, data []byte) *strictReader {
	return &strictReader{tb: tb, data: data, size: int64(len(data))}
}

func (r *strictReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.size {
		r.tb.Errorf("read [%d, %d) outside the %d-byte file", off, off+int64(len(p)), r.size)
		return 0, errors.New("read outside the file")
	}
	if len(p) > maxRead {
		r.tb.Errorf("read of %d bytes at once", len(p))
	}
	if off >= int64(len(r.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// allocated runs f and returns the bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
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
