package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/internal/mountinfo"
	mountcfg "github.com/modelfs/modelfs/mount/config"
)

// mountProc is a running `modelfs mount` child. Each cold pass gets a fresh
// one so that its caches are empty and its rusage at exit is its own.
type mountProc struct {
	bin, dir string
	// label names the daemon in errors: "modelfs mount", or a peer's tool.
	label string
	// peer marks another filesystem's daemon, unmounted with fusermount3
	// rather than `modelfs unmount`.
	peer    bool
	cmd     *exec.Cmd
	stderr  *tailBuffer
	done    chan struct{} // closed when cmd.Wait returns
	waitErr error
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
	m := &mountProc{bin: bin, dir: dir, label: "modelfs mount", cmd: cmd, stderr: &tailBuffer{max: 16 << 10, noise: spliceNoise}, done: make(chan struct{})}
	cmd.Stderr = m.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	liveMounts.Lock()
	liveMounts.m[m] = struct{}{}
	liveMounts.Unlock()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.HasPrefix(sc.Text(), mountcfg.ReadyPrefix) {
				close(ready)
				signalled = true
			}
		}
		io.Copy(io.Discard, stdout)
		m.waitErr = cmd.Wait()
		close(m.done)
	}()
	select {
	case <-ready:
		return m, nil
	case <-m.done:
		m.forget()
		return nil, fmt.Errorf("modelfs mount exited before it was ready: %v\n%s", m.waitErr, m.stderr)
	case <-ctx.Done():
		m.stop()
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		m.stop()
		return nil, fmt.Errorf("modelfs mount not ready after a minute\n%s", m.stderr)
	}
}

func (m *mountProc) pid() int { return m.cmd.Process.Pid }

func (m *mountProc) forget() {
	liveMounts.Lock()
	delete(liveMounts.m, m)
	liveMounts.Unlock()
}

// exitUsage is what the mount process used over its whole life.
type exitUsage struct {
	CPUSeconds float64
	// MaxRSS is the mount's peak RSS in bytes, its VmHWM read just before
	// it is told to stop (see procHWM for why not its rusage); 0 if it had
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

// stop unmounts with SIGTERM and waits for a clean exit; if the process
// does not exit in time it is killed and the mountpoint cleared with
// `modelfs unmount`. The CPU time comes from the child's rusage at exit,
// the peak RSS from /proc just before the signal.
func (m *mountProc) stop() (exitUsage, error) {
	defer m.forget()
	var errs []error
	var u exitUsage
	select {
	case <-m.done:
	default:
		u.MaxRSS, _ = procHWM(m.pid())
		// A peer's daemon exits once its filesystem is unmounted (how each
		// tool's docs say to stop it); modelfs unmounts on SIGTERM.
		if !m.peer || exec.Command("fusermount3", "-u", m.dir).Run() != nil {
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
			errs = append(errs, fmt.Errorf("%s ignored SIGTERM for 30s; killed", m.label))
		}
	}
	if m.waitErr != nil {
		errs = append(errs, fmt.Errorf("%s exited with %v\n%s", m.label, m.waitErr, m.stderr))
	}
	if mounted(m.dir) {
		unmount := exec.Command(m.bin, "unmount", m.dir)
		if m.peer {
			unmount = exec.Command("fusermount3", "-u", "-z", m.dir)
		}
		if out, err := unmount.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v: %s", strings.Join(unmount.Args, " "), err, out))
		}
	}
	if ps := m.cmd.ProcessState; ps != nil {
		u.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	// cmd.Wait has returned, so the whole log has been copied.
	u.Summary = parseSummary(m.stderr.String())
	if len(errs) > 0 {
		return u, fmt.Errorf("stopping the mount at %s: %v", m.dir, errs)
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

// tailBuffer keeps the last max bytes written: the mount's log, for error
// messages and its summary line. Whole lines containing noise (when set)
// are counted rather than kept.
type tailBuffer struct {
	mu      sync.Mutex
	b       []byte
	max     int
	noise   string
	partial []byte // an unfinished line, when noise is set
	noisy   int64
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noise == "" {
		t.keep(p)
		return len(p), nil
	}
	// The log arrives through a pipe in arbitrary chunks: filter by line.
	t.partial = append(t.partial, p...)
	done := 0
	for {
		i := bytes.IndexByte(t.partial[done:], '\n')
		if i < 0 {
			break
		}
		if line := t.partial[done : done+i+1]; bytes.Contains(line, []byte(t.noise)) {
			t.noisy++
		} else {
			t.keep(line)
		}
		done += i + 1
	}
	t.partial = t.partial[:copy(t.partial, t.partial[done:])]
	if len(t.partial) > t.max { // a line longer than the tail: keep it
		t.keep(t.partial)
		t.partial = t.partial[:0]
	}
	return len(p), nil
}

func (t *tailBuffer) keep(p []byte) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(append(slices.Clip(t.b), t.partial...)))
	if t.noisy > 0 {
		s = fmt.Sprintf("(%d lines %q... left out)\n%s", t.noisy, t.noise, s)
	}
	return s
}
