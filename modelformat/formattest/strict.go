package formattest

import (
	"errors"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
)

// MaxRead is the most a StrictReader lets a parser read at once: headers
// are read in bounded chunks, never whole.
const MaxRead = 1 << 20

// StrictReader is a file of Size bytes of which Data is the start (a file
// may claim more than a test bothers to hold). It fails the test on a read
// outside the file or of more than MaxRead bytes at once, and on a second
// Close.
type StrictReader struct {
	tb     testing.TB
	Data   []byte
	Size   int64
	closed atomic.Bool
}

// NewStrict is a StrictReader over data, of its length.
func NewStrict(tb testing.TB, data []byte) *StrictReader {
	return &StrictReader{tb: tb, Data: data, Size: int64(len(data))}
}

func (r *StrictReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.Size {
		r.tb.Errorf("read [%d, %d) outside the %d-byte file", off, off+int64(len(p)), r.Size)
		return 0, errors.New("read outside the file")
	}
	if len(p) > MaxRead {
		r.tb.Errorf("read of %d bytes at once", len(p))
	}
	if off >= int64(len(r.Data)) {
		return 0, io.EOF
	}
	n := copy(p, r.Data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close marks the reader closed; twice fails the test.
func (r *StrictReader) Close() error {
	if r.closed.Swap(true) {
		r.tb.Errorf("closed twice")
	}
	return nil
}

// Closed reports whether Close was called.
func (r *StrictReader) Closed() bool { return r.closed.Load() }

// Allocated runs f and returns the bytes it allocated.
func Allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
