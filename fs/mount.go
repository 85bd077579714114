package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/internal/mountinfo"
)

// Options configures a mount.
type Options struct {
	Files []File
	// FsName shows in /proc/mounts as the source, e.g. "s3://bucket/prefix".
	FsName string
	Logger *slog.Logger
	// MaxRead is the largest read request asked of the kernel (default
	// 1 MiB; the kernel may cap it lower).
	MaxRead int
	// CacheTimeout is how long the kernel may cache entries and attributes
	// (default 1 h: the tree never changes while mounted).
	CacheTimeout time.Duration
	// ReadAheadKB sets the kernel's readahead for the mount (default
	// 8192). The kernel's own default, 128 KiB, splits a stream into many
	// small requests; this needs root and is skipped silently without it.
	ReadAheadKB int
	AllowOther  bool
	Debug       bool
	// Snapshot, when set, makes the hidden StatsName file at the root:
	// each open gets what Snapshot returns then. A remote file of that
	// name at the root is skipped.
	Snapshot func() ([]byte, error)
	// Observer, when set, is told operation latencies and first bytes.
	Observer Observer
}

// Server is a running mount.
type Server struct {
	srv        *fuse.Server
	mountpoint string
	// Skipped lists remote files left out of the tree.
	Skipped []Skipped
	Stats   *Stats
}

// Mount mounts the files read-only at mountpoint and serves them until
// Unmount. As root it mounts /dev/fuse directly; otherwise through
// fusermount3.
func Mount(mountpoint string, opts Options) (*Server, error) {
	if err := checkMountpoint(mountpoint); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	maxRead := opts.MaxRead
	if maxRead <= 0 {
		maxRead = 1 << 20
	}
	timeout := opts.CacheTimeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	files, skipped := opts.Files, []Skipped(nil)
	if opts.Snapshot != nil {
		files, skipped = withoutReserved(files)
	}
	tree, bad := buildTree(files)
	skipped = append(skipped, bad...)
	stats := &Stats{}
	obs := observer{opts.Observer}
	root := &dirNode{mtime: tree.mtime, obs: obs}
	fsName := opts.FsName
	if fsName == "" {
		fsName = "modelfs"
	}
	fopts := &fusefs.Options{
		MountOptions: fuse.MountOptions{
			FsName:       fsName,
			Name:         "modelfs",
			Options:      []string{"ro", "default_permissions"},
			MaxWrite:     maxRead,
			MaxReadAhead: maxRead,
			AllowOther:   opts.AllowOther,
			DirectMount:  true,
			Debug:        opts.Debug,
			// Read-only and no xattrs: spare the kernel those round trips.
			DisableXAttrs: true,
			// Splicing only saves a copy from a file descriptor, and the
			// bytes here are in memory: stream replies are written from
			// the cache's blocks with writev, which go-fuse never splices.
			// Other replies (the stats file) would be, and the pipe could
			// not hold them: a 1 MiB reply plus its header and the page
			// go-fuse adds is more than /proc/sys/fs/pipe-max-size (1 MiB
			// by default), so each try failed, logged "trySplice: ... max
			// pipe size" and fell back to a write.
			DisableSplice: true,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		OnAdd: func(ctx context.Context) {
			addChildren(ctx, &root.Inode, tree, log, stats, obs)
			if opts.Snapshot != nil {
				// Not added as a child: only Lookup finds it.
				sn := &statsNode{snapshot: opts.Snapshot, mtime: time.Now(), log: log}
				root.stats = root.NewPersistentInode(ctx, sn, fusefs.StableAttr{Mode: syscall.S_IFREG})
			}
		},
	}
	srv, err := fusefs.Mount(mountpoint, root, fopts)
	if err != nil {
		return nil, fmt.Errorf("mounting at %s: %w", mountpoint, err)
	}
	ra := opts.ReadAheadKB
	if ra <= 0 {
		ra = 8192
	}
	if err := setReadAhead(mountpoint, ra); err != nil {
		log.Debug("kernel readahead left at its default", "err", err)
	}
	return &Server{srv: srv, mountpoint: mountpoint, Skipped: skipped, Stats: stats}, nil
}

// setReadAhead writes the mount's backing-device readahead in sysfs.
func setReadAhead(mountpoint string, kb int) error {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return err
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	return os.WriteFile(path, []byte(strconv.Itoa(kb)), 0)
}

func addChildren(ctx context.Context, parent *fusefs.Inode, d *dirEntry, log *slog.Logger, stats *Stats, obs observer) {
	for name, sub := range d.dirs {
		n := &dirNode{mtime: sub.mtime, obs: obs}
		child := parent.NewPersistentInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFDIR})
		parent.AddChild(name, child, false)
		addChildren(ctx, child, sub, log, stats, obs)
	}
	for name, f := range d.files {
		n := &fileNode{file: f, log: log, stats: stats, obs: obs}
		child := parent.NewPersistentInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFREG})
		parent.AddChild(name, child, false)
	}
}

// Wait blocks until the filesystem is unmounted.
func (s *Server) Wait() { s.srv.Wait() }

// Unmount unmounts, retrying briefly while the mount is busy.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("unmounting %s: %w", s.mountpoint, err)
	}
	return nil
}

// checkMountpoint wants an existing directory that is not already a mount.
func checkMountpoint(mp string) error {
	st, err := os.Stat(mp)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return staleError(mp)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist", mp)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", mp, err)
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", mp)
	}
	mounted, err := mountinfo.IsMounted(mp)
	if err != nil {
		return err
	}
	if mounted {
		// Attributes may come from the kernel's cache; listing reaches the
		// filesystem and tells a live mount from a dead one.
		if isStale(mp) {
			return staleError(mp)
		}
		return fmt.Errorf("mountpoint %s is already mounted", mp)
	}
	return nil
}

func staleError(mp string) error {
	return fmt.Errorf("mountpoint %s is a stale mount (transport endpoint is not connected); run 'modelfs unmount %s' first", mp, mp)
}

func isStale(mp string) bool {
	f, err := os.Open(mp)
	if err == nil {
		_, err = f.Readdirnames(1)
		f.Close()
	}
	return errors.Is(err, syscall.ENOTCONN)
}
