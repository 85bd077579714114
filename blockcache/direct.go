package blockcache

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Blocks go to and from the data file with direct I/O where the file
// system allows it. A buffered write of a block costs as much CPU as
// fetching it: the kernel allocates and fills a fresh page-cache page per
// 4 KiB (2.3 CPU-s/GiB measured on the 2-core VM of docs/benchmarks.md;
// O_DIRECT from the same recycled buffer: 0.02). Reads of a block into a
// RAM buffer likewise skip a second copy in the page cache (0.1 → 0.02).
// Direct writes invalidate the page cache over the range they write, so
// buffered readers of the file (passthrough, whole-file verification,
// other processes) still see the bytes.
//
// directAlign is what O_DIRECT asks of offsets, lengths and memory: the
// page size covers every logical block size in use.
const directAlign = 4096

// directFile is the O_DIRECT twin of an object's data file, or nil where
// the file system refuses direct I/O; it turns itself off at the first
// EINVAL, and every call then takes the buffered path.
type directFile struct {
	f   *os.File
	off atomic.Bool
}

func openDirect(path string) *directFile {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return nil // tmpfs before 6.6, some FUSE file systems: buffered only
	}
	return &directFile{f: f}
}

func (d *directFile) close() {
	if d != nil {
		d.f.Close()
	}
}

// usable reports whether p at off can go through d: its start and offset
// aligned. Only the aligned head of p goes direct; the tail of the last
// block, shorter than directAlign, goes buffered.
func (d *directFile) usable(p []byte, off int64) bool {
	return d != nil && !d.off.Load() && len(p) >= directAlign && off%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// refused turns d off when the file system rejects direct I/O after all.
func (d *directFile) refused(err error) bool {
	if errors.Is(err, syscall.EINVAL) {
		d.off.Store(true)
		return true
	}
	return false
}

// writeBlock writes p at off in the data file: the aligned head directly,
// the rest through buffered.
func (o *diskObject) writeBlock(p []byte, off int64) error {
	if d := o.direct; d.usable(p, off) {
		head := len(p) &^ (directAlign - 1)
		_, err := d.f.WriteAt(p[:head], off)
		switch {
		case err == nil:
			p, off = p[head:], off+int64(head)
		case d.refused(err):
			// buffered below, the whole block
		default:
			return fmt.Errorf("direct write: %w", err)
		}
	}
	if len(p) == 0 {
		return nil
	}
	_, err := o.data.WriteAt(p, off)
	return err
}

// readBlock fills p from off in the data file, the same way round as
// writeBlock, unless the range is all in the page cache (a filled cache
// file, a file another reader brought in): a copy from memory then beats
// a read from the disk, and cached reports it. It returns how many bytes
// it read.
func (o *diskObject) readBlock(p []byte, off int64) (n int, cached bool, err error) {
	cached = inPageCache(o.data, off, int64(len(p)))
	if d := o.direct; d.usable(p, off) && !cached {
		head := len(p) &^ (directAlign - 1)
		m, err := d.f.ReadAt(p[:head], off)
		switch {
		case err == nil:
			n = m
		case d.refused(err):
		default:
			return m, false, err
		}
	}
	if n == len(p) {
		return n, cached, nil
	}
	m, err := o.data.ReadAt(p[n:], off+int64(n))
	return n + m, cached, err
}

// inPageCache reports whether the n bytes at off of f are all in the page
// cache, from cachestat(2) (Linux 6.5+; false where it is missing).
func inPageCache(f *os.File, off, n int64) bool {
	var st unix.Cachestat_t
	r := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	if err := unix.Cachestat(uint(f.Fd()), &r, &st, 0); err != nil {
		return false
	}
	page := int64(os.Getpagesize())
	return int64(st.Cache) >= (n+page-1)/page
}
