package fs

import (
	"context"
	"log/slog"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// StatsName is the hidden file at the mount root whose content is a fresh
// snapshot of the mount's state (Options.Snapshot) at every open. Readdir
// does not list it; a lookup by name finds it, so it is reachable from
// anywhere the mount is, such as a container that sees only the volume.
const StatsName = ".modelfs-stats"

// withoutReserved drops a root-level file that would hide the stats file.
func withoutReserved(files []File) ([]File, []Skipped) {
	var skipped []Skipped
	kept := files[:0:0]
	for _, f := range files {
		if f.Path == StatsName {
			skipped = append(skipped, Skipped{f.Path, "reserved name (the mount's stats file)"})
			continue
		}
		kept = append(kept, f)
	}
	return kept, skipped
}

// statsNode is the stats file. It reports size 0, like the files of
// /proc, and is opened with direct I/O: every read reaches the snapshot
// taken at open, never a stale page.
type statsNode struct {
	fusefs.Inode
	snapshot func() ([]byte, error)
	mtime    time.Time
	log      *slog.Logger
}

var (
	_ fusefs.NodeGetattrer = (*statsNode)(nil)
	_ fusefs.NodeSetattrer = (*statsNode)(nil)
	_ fusefs.NodeOpener    = (*statsNode)(nil)
)

func (n *statsNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	return 0
}

func (n *statsNode) fillAttr(a *fuse.Attr) {
	a.Mode = fileMode
	a.Nlink = 1
	setTimes(a, n.mtime)
}

func (n *statsNode) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *statsNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	data, err := n.snapshot()
	if err != nil {
		n.log.Error("stats snapshot failed", "err", err)
		return nil, 0, syscall.EIO
	}
	return &statsHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
}

// statsHandle serves one snapshot.
type statsHandle struct{ data []byte }

var _ fusefs.FileReader = (*statsHandle)(nil)

func (h *statsHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.data[off:min(off+int64(len(dest)), int64(len(h.data)))]), 0
}
