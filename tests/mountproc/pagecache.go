package mountproc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
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

// Folios is how the resident pages of a file lie in the page cache.
type Folios struct {
	Resident int // pages in the page cache
	Single   int // of them, pages in folios of one page
	Large    int // folios of more than one page
	Largest  int // pages of the largest folio
}

// PagesPerFolio is the resident pages per folio.
func (f Folios) PagesPerFolio() float64 {
	return float64(f.Resident) / float64(max(f.Single+f.Large, 1))
}

// PageFolios counts the folios holding the resident pages of the file at
// path, from the flags of their page frames (/proc/self/pagemap and
// /proc/kpageflags, which need CAP_SYS_ADMIN); it errs where those cannot
// be read. It maps the resident pages into this process to learn their
// frames, and brings in none that are not resident.
func PageFolios(tb Fataler, path string) (Folios, error) {
	tb.Helper()
	resident := Resident(tb, path)
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return Folios{}, err
	}
	defer pagemap.Close()
	kflags, err := os.Open("/proc/kpageflags")
	if err != nil {
		return Folios{}, err
	}
	defer kflags.Close()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	defer f.Close()
	if len(resident) == 0 {
		return Folios{}, nil
	}
	ps := os.Getpagesize()
	data, err := unix.Mmap(int(f.Fd()), 0, len(resident)*ps, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	defer unix.Munmap(data)
	const (
		present      = 1 << 63
		pfnMask      = 1<<55 - 1
		compoundHead = 1 << 15
		compoundTail = 1 << 16
	)
	var out Folios
	run := 0 // pages of the folio being counted
	var sink byte
	buf := make([]byte, 8)
	for i, in := range resident {
		if !in {
			continue
		}
		sink ^= data[i*ps] // maps the page, already in memory
		addr := uintptr(unsafe.Pointer(&data[i*ps]))
		if _, err := pagemap.ReadAt(buf, int64(addr)/int64(ps)*8); err != nil {
			return Folios{}, fmt.Errorf("pagemap: %w", err)
		}
		e := binary.LittleEndian.Uint64(buf)
		if e&present == 0 {
			continue // reclaimed meanwhile
		}
		pfn := e & pfnMask
		if pfn == 0 {
			return Folios{}, errors.New("page frame numbers are hidden without CAP_SYS_ADMIN")
		}
		if _, err := kflags.ReadAt(buf, int64(pfn)*8); err != nil {
			return Folios{}, fmt.Errorf("kpageflags: %w", err)
		}
		fl := binary.LittleEndian.Uint64(buf)
		out.Resident++
		switch {
		case fl&compoundHead != 0:
			out.Large++
			run = 1
		case fl&compoundTail != 0:
			run++
		default:
			out.Single++
			run = 1
		}
		out.Largest = max(out.Largest, run)
	}
	runtime.KeepAlive(sink)
	return out, nil
}
