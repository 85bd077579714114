package fs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const (
	dirMode  = syscall.S_IFDIR | 0o555
	fileMode = syscall.S_IFREG | 0o444
)

type dirNode struct {
	fusefs.Inode
	mtime time.Time
}

var (
	_ fusefs.NodeGetattrer = (*dirNode)(nil)
	_ fusefs.NodeSetattrer = (*dirNode)(nil)
)

func (d *dirNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = dirMode
	out.Nlink = 2
	setTimes(&out.Attr, d.mtime)
	return 0
}

func (d *dirNode) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

type fileNode struct {
	fusefs.Inode
	file  *File
	log   *slog.Logger
	stats *Stats

	// The kernel fails an open with EIO when one inode would be open both
	// through the page cache and through passthrough, so passthrough is
	// offered only while no cached open is left.
	mu           sync.Mutex
	opens        int
	passthroughs int
}

var (
	_ fusefs.NodeGetattrer = (*fileNode)(nil)
	_ fusefs.NodeSetattrer = (*fileNode)(nil)
	_ fusefs.NodeOpener    = (*fileNode)(nil)
)

func (n *fileNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fileMode
	out.Nlink = 1
	out.Size = uint64(n.file.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 1 << 20
	setTimes(&out.Attr, n.file.ModTime)
	return 0
}

func (n *fileNode) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	n.mu.Lock()
	n.opens++
	n.mu.Unlock()
	// Content is immutable while mounted: keep the page cache across opens.
	return &handle{h: n.file.Content.Open(), node: n}, fuse.FOPEN_KEEP_CACHE, 0
}

func setTimes(a *fuse.Attr, t time.Time) {
	if t.IsZero() {
		return
	}
	a.SetTimes(&t, &t, &t)
}

type handle struct {
	h           Handle
	node        *fileNode
	passthrough bool
}

var (
	_ fusefs.FileReader          = (*handle)(nil)
	_ fusefs.FileReleaser        = (*handle)(nil)
	_ fusefs.FilePassthroughFder = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if sr, ok := h.h.(SliceReader); ok {
		return h.readSlices(ctx, sr, len(dest), off)
	}
	n, err := h.h.ReadAt(ctx, dest, off)
	h.node.stats.Reads.Add(1)
	h.node.stats.ReadBytes.Add(int64(n))
	if err != nil && !errors.Is(err, io.EOF) {
		h.node.stats.ReadErrors.Add(1)
		return nil, h.node.errno(err, off, len(dest))
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) readSlices(ctx context.Context, sr SliceReader, size int, off int64) (fuse.ReadResult, syscall.Errno) {
	slices, release, err := sr.ReadSlices(ctx, off, size)
	h.node.stats.Reads.Add(1)
	if err != nil && !errors.Is(err, io.EOF) {
		h.node.stats.ReadErrors.Add(1)
		return nil, h.node.errno(err, off, size)
	}
	r := &sliceResult{slices: slices, release: release}
	h.node.stats.ReadBytes.Add(int64(r.Size()))
	return r, 0
}

// sliceResult is a read reply written from borrowed memory (go-fuse
// writes Slices with writev, then calls Done).
type sliceResult struct {
	slices  [][]byte
	release func()
}

func (r *sliceResult) Slices() ([][]byte, fuse.Status) { return r.slices, fuse.OK }

func (r *sliceResult) Size() int {
	n := 0
	for _, s := range r.slices {
		n += len(s)
	}
	return n
}

// Bytes copies, for the paths that want one buffer.
func (r *sliceResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if len(r.slices) == 1 {
		return r.slices[0], fuse.OK
	}
	n := 0
	for _, s := range r.slices {
		n += copy(buf[n:], s)
	}
	return buf[:n], fuse.OK
}

func (r *sliceResult) Done() {
	if r.release != nil {
		r.release()
		r.release = nil
	}
}

// PassthroughFd offers the kernel a backing file when the content has one
// and no other open of the file goes through the page cache.
func (h *handle) PassthroughFd() (int, bool) {
	p, ok := h.h.(Passthrougher)
	if !ok {
		return 0, false
	}
	n := h.node
	n.mu.Lock()
	defer n.mu.Unlock()
	if cached := n.opens - 1 - n.passthroughs; cached > 0 {
		return 0, false
	}
	fd, ok := p.PassthroughFd()
	if ok {
		h.passthrough = true
		n.passthroughs++
	}
	return fd, ok
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.node.mu.Lock()
	h.node.opens--
	if h.passthrough {
		h.node.passthroughs--
	}
	h.node.mu.Unlock()
	h.h.Release()
	return 0
}

// errno maps a read error to what the application sees, logging it once.
// The errors below fs carry the object and cause; the app only gets EIO.
func (n *fileNode) errno(err error, off int64, size int) syscall.Errno {
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	n.log.Error("read failed", "file", n.file.Path, "offset", off, "size", size, "err", err)
	return syscall.EIO
}

// Stats count the reads the filesystem served itself; reads the kernel
// answered from its page cache or through passthrough never arrive here.
type Stats struct {
	Reads, ReadBytes, ReadErrors atomic.Int64
}
