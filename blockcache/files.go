package blockcache

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// openFile is os.OpenFile for the files an open through the mount reads
// (an object's pin, data file and marks), without registering them with
// the runtime's poller: regular files cannot be polled, and os.OpenFile's
// attempt costs four fcntl and a failed epoll_ctl per file, a third of
// the system calls of an open of a cached file through the mount.
func openFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// readMark returns the contents of a small file (a stamp), at most max
// bytes of it.
func readMark(path string, max int64) ([]byte, error) {
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}

// maxMark bounds what readMark reads of a stamp (stampOf: inode, size and
// ctime, under 80 bytes); a longer file matches no stamp anyway.
const maxMark = 256
