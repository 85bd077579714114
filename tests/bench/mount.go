package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/modelfs/modelfs/internal/mountinfo"
	"github.com/modelfs/modelfs/tests/mountproc"
)

// mountProc is a running `modelfs mount` child, or a peer's daemon. Each
// cold pass gets a fresh one so that its caches are empty and its rusage
// at exit is its own.
type mountProc struct {
	*mountproc.Proc
	dir string
}

// liveMounts are the mounts to clean up if the bench fails or is
// interrupted part-way.
var liveMounts = struct {
	sync.Mutex
	m map[*mountProc]struct{}
}{m: map[*mountProc]struct{}{}}

// startMount runs `bin mount args... source dir` and waits for its ready
// line.
func startMount(ctx context.Context, bin, source, dir string, args, env []string) (*mountProc, error) {
	full := append([]string{"mount"}, args...)
	full = append(full, source, dir)
	cmd := exec.Command(bin, full...)
	cmd.Env = env
	return startProc(ctx, cmd, mountproc.Options{Mountpoint: dir, Label: "modelfs mount",
		Log: &mountproc.Log{Max: 16 << 10, Omit: spliceNoise}})
}

// startProc starts a daemon and keeps it among the live mounts until it
// is stopped.
func startProc(ctx context.Context, cmd *exec.Cmd, opts mountproc.Options) (*mountProc, error) {
	p, err := mountproc.Start(ctx, cmd, opts)
	if err != nil {
		return nil, err
	}
	m := &mountProc{Proc: p, dir: opts.Mountpoint}
	liveMounts.Lock()
	liveMounts.m[m] = struct{}{}
	liveMounts.Unlock()
	return m, nil
}

func (m *mountProc) pid() int { return m.Pid() }

func (m *mountProc) forget() {
	liveMounts.Lock()
	delete(liveMounts.m, m)
	liveMounts.Unlock()
}

// exitUsage is what the mount process used over its whole life.
type exitUsage struct {
	CPUSeconds float64
	// MaxRSS is the mount's peak RSS in bytes, its VmHWM read just before
	// it is told to stop (see mountproc.Memory for why not its rusage); 0 if it had
	// exited by then.
	MaxRSS int64
	// Summary is the mount's own account, from its "msg=unmounted" log
	// line (fuse_reads, loads, disk_hits, ...); nil when it wrote
	// none.
	Summary map[string]int64
}

// parseSummary returns the integer fields of the last "msg=unmounted"
// line of a modelfs log (slog's text format: key=value pairs), or nil.
func parseSummary(log string) map[string]int64 {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if !slices.Contains(f, "msg=unmounted") {
			continue
		}
		out := map[string]int64{}
		for _, kv := range f {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				out[k] = n
			}
		}
		return out
	}
	return nil
}

// stop unmounts (SIGTERM for modelfs, an unmount for a peer) and waits
// for a clean exit; if the process does not exit in time it is killed
// and the mountpoint detached. The CPU time comes from the child's rusage
// at exit, the peak RSS from /proc just before it was told to stop.
func (m *mountProc) stop() (exitUsage, error) {
	defer m.forget()
	pu, err := m.Stop()
	// The process has exited, so the whole log has been copied.
	u := exitUsage{CPUSeconds: pu.CPUSeconds, MaxRSS: pu.PeakRSS, Summary: parseSummary(m.Log())}
	if err != nil {
		return u, fmt.Errorf("stopping the mount at %s: %w", m.dir, err)
	}
	return u, nil
}

// stopAllMounts is the failure path: every mount still running is stopped.
func stopAllMounts() {
	liveMounts.Lock()
	ms := make([]*mountProc, 0, len(liveMounts.m))
	for m := range liveMounts.m {
		ms = append(ms, m)
	}
	liveMounts.Unlock()
	for _, m := range ms {
		if _, err := m.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	}
}

// mounted reports whether dir is a mountpoint.
func mounted(dir string) bool {
	ok, err := mountinfo.IsMounted(dir)
	return err == nil && ok
}

// spliceNoise marks a line that go-fuse logs for every FUSE read reply of
// about 1 MiB: it tries to splice the reply, cannot grow its pipe past
// 1 MiB for the payload plus header, and falls back to a plain write. The
// log of a mount is otherwise a handful of lines; kept, these would push
// everything else out of the tail.
const spliceNoise = "trySplice: splice: want "
