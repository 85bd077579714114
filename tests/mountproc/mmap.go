package mountproc

import (
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
	"unsafe"
)

// PageSize is the unit in which a mapping faults.
const PageSize = 4096

// ReadMapped maps path read-only and calls fn with the mapping, as the
// mmap-based loaders of safetensors and GGUF read. A read behind the
// mapping that the filesystem fails (EIO from a mount) arrives as SIGBUS;
// it comes back as an error "fault reading mapping at offset N" instead of
// a crash that leaves the mount up. The mapping is gone once ReadMapped
// returns: fn must not keep it. It returns the file's size.
func ReadMapped(path string, fn func(f *os.File, data []byte) error) (size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size = st.Size()
	if size == 0 || int64(int(size)) != size {
		return size, fmt.Errorf("cannot map a file of %d bytes", size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return size, fmt.Errorf("mmap: %w", err)
	}
	defer syscall.Munmap(data)
	// The setting is per goroutine, and fn runs on this one.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(interface{ Addr() uintptr })
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("fault reading mapping at offset %d", fe.Addr()-uintptr(unsafe.Pointer(&data[0])))
		}
	}()
	return size, fn(f, data)
}

// TouchPages reads the byte at begin, then the first byte of every later
// page up to end, so that each page overlapping [begin, end) faults
// exactly once; it returns their XOR, which the caller keeps so the loads
// are not optimised away.
func TouchPages(data []byte, begin, end int64) byte {
	var acc byte
	for off := begin; off < end; off = (off/PageSize + 1) * PageSize {
		acc ^= data[off]
	}
	return acc
}
