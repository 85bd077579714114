package mountproc

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DropCache writes back and evicts the unlocked page-cache pages of the
// file at path.
func DropCache(tb Fataler, path string) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		tb.Fatalf("%v", err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		tb.Fatalf("%v", err)
	}
}

// Resident reports, per page, whether the page of the file at path is in
// the page cache (mincore, which faults nothing in).
func Resident(tb Fataler, path string) []bool {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	if st.Size() == 0 {
		return nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	defer unix.Munmap(data)
	ps := os.Getpagesize()
	vec := make([]byte, (len(data)+ps-1)/ps)
	// x/sys has no Mincore wrapper on Linux.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		tb.Fatalf("mincore %s: %v", path, errno)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}
