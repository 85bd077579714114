package fs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
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
	obs   observer
	// stats is the hidden stats file: set on the root only, when enabled.
	stats *fusefs.Inode
}

var (
	_ fusefs.NodeGetattrer = (*dirNode)(nil)
	_ fusefs.NodeSetattrer = (*dirNode)(nil)
	_ fusefs.NodeLookuper  = (*dirNode)(nil)
	_ fusefs.NodeReaddirer = (*dirNode)(nil)
)

func (d *dirNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	defer d.obs.done(OpGetattr, d.obs.start())
	d.fillAttr(&out.Attr)
	return 0
}

func (d *dirNode) fillAttr(a *fuse.Attr) {
	a.Mode = dirMode
	a.Nlink = 2
	setTimes(a, d.mtime)
}

// attrFiller is every node of the tree.
type attrFiller interface{ fillAttr(*fuse.Attr) }

// Lookup is go-fuse's own lookup of a child, plus the stats file, which
// is found by name but is not a listed child.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	defer d.obs.done(OpLookup, d.obs.start())
	child := d.stats
	if child == nil || name != StatsName {
		child = d.GetChild(name)
	}
	if child == nil {
		return nil, syscall.ENOENT
	}
	if n, ok := child.Operations().(attrFiller); ok {
		n.fillAttr(&out.Attr)
	}
	return child, 0
}

// Readdir lists the children, sorted, without the stats file (which
// becomes a child once looked up).
func (d *dirNode) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	defer d.obs.done(OpReaddir, d.obs.start())
	children := d.Children()
	entries := make([]fuse.DirEntry, 0, len(children))
	for name, c := range children {
		if d.stats != nil && name == StatsName {
			continue
		}
		entries = append(entries, fuse.DirEntry{Mode: c.Mode(), Name: name, Ino: c.StableAttr().Ino})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	return fusefs.NewListDirStream(entries), 0
}

func (d *dirNode) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

type fileNode struct {
	fusefs.Inode
	file  *File
	log   *slog.Logger
	stats *Stats
	obs   observer

	// For Observer.FirstByte: when the file was first opened (Unix
	// nanoseconds) and whether a byte of it was served since.
	firstOpen atomic.Int64
	served    atomic.Bool

	// The kernel fails an open with EIO when one inode would be open both
	// through the page cache and through passthrough, so passthrough is
	// offered only while no cached open is left.
	mu           sync.Mutex
	opens        int
	passthroughs int

	// invalidated is set once the kernel was told to drop the pages of a
	// damaged file.
	invalidated atomic.Bool
}

var (
	_ fusefs.NodeGetattrer = (*fileNode)(nil)
	_ fusefs.NodeSetattrer = (*fileNode)(nil)
	_ fusefs.NodeOpener    = (*fileNode)(nil)
)

func (n *fileNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	defer n.obs.done(OpGetattr, n.obs.start())
	n.fillAttr(&out.Attr)
	return 0
}

func (n *fileNode) fillAttr(a *fuse.Attr) {
	a.Mode = fileMode
	a.Nlink = 1
	a.Size = uint64(n.file.Size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 1 << 20
	setTimes(a, n.file.ModTime)
}

func (n *fileNode) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	defer n.obs.done(OpOpen, n.obs.start())
	if n.obs.o != nil && n.firstOpen.Load() == 0 {
		n.firstOpen.CompareAndSwap(0, time.Now().UnixNano())
	}
	n.mu.Lock()
	n.opens++
	n.mu.Unlock()
	// Content is immutable while mounted: keep the page cache across
	// opens, unless it turned out damaged, when an open without
	// KEEP_CACHE drops the pages read before.
	keep := uint32(fuse.FOPEN_KEEP_CACHE)
	if n.damaged() {
		keep = 0
	}
	return &handle{h: n.file.Content.Open(), node: n}, keep, 0
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
	_ fusefs.FileFlusher         = (*handle)(nil)
)

// Flush answers the request close(2) sends with ENOSYS, which tells the
// kernel to send none again on this mount: a read-only file has nothing
// to flush, and each close would otherwise wait a round trip to modelfs.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	h.node.stats.flushes.Add(1)
	return syscall.ENOSYS
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	defer h.node.obs.done(OpRead, h.node.obs.start())
	if sr, ok := h.h.(SliceReader); ok {
		return h.readSlices(ctx, sr, len(dest), off)
	}
	n, err := h.h.ReadAt(ctx, dest, off)
	h.node.stats.Reads.Add(1)
	h.node.stats.ReadBytes.Add(int64(n))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.node.errno(err, off, len(dest))
	}
	h.node.servedBytes(n)
	return fuse.ReadResultData(dest[:n]), 0
}

// servedBytes reports the file's first byte served, once.
func (n *fileNode) servedBytes(count int) {
	if n.obs.o == nil || count == 0 || n.served.Load() || !n.served.CompareAndSwap(false, true) {
		return
	}
	n.obs.o.FirstByte(time.Since(time.Unix(0, n.firstOpen.Load())))
}

func (h *handle) readSlices(ctx context.Context, sr SliceReader, size int, off int64) (fuse.ReadResult, syscall.Errno) {
	slices, release, err := sr.ReadSlices(ctx, off, size)
	h.node.stats.Reads.Add(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.node.errno(err, off, size)
	}
	r := &sliceResult{slices: slices, release: release}
	size = r.Size()
	h.node.stats.ReadBytes.Add(int64(size))
	h.node.servedBytes(size)
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
		n.stats.PassthroughOpens.Add(1)
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

// errno maps a read error to what the application sees, logging and
// counting it once. The errors below fs carry the object and cause; the
// app only gets EIO. An interrupted read is no error: the kernel cancelled
// it (a signal reached the reader) and the reader retries.
func (n *fileNode) errno(err error, off int64, size int) syscall.Errno {
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	n.stats.ReadErrors.Add(1)
	if n.damaged() {
		// Already logged where it was found. Pages the kernel cached
		// before would still read clean through handles open now: drop
		// them, outside this request, which may hold one of them locked.
		if !n.invalidated.Swap(true) {
			go n.NotifyContent(0, 0)
		}
		n.log.Debug("read failed", "file", n.file.Path, "offset", off, "size", size, "err", err)
		return syscall.EIO
	}
	n.log.Error("read failed", "file", n.file.Path, "offset", off, "size", size, "err", err)
	return syscall.EIO
}

// damaged reports whether the content turned out not to be what its store
// holds.
func (n *fileNode) damaged() bool {
	d, ok := n.file.Content.(Damager)
	return ok && d.Damaged()
}

// Stats count the reads the filesystem served itself; reads the kernel
// answered from its page cache or through passthrough never arrive here.
// PassthroughOpens counts the opens that offered the kernel a backing
// file; opens while one is registered share it and are not counted.
type Stats struct {
	Reads, ReadBytes, ReadErrors atomic.Int64
	PassthroughOpens             atomic.Int64
	flushes                      atomic.Int64 // FLUSH requests (see handle.Flush)
}
