package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// mountProc is a running `modelfs mount` child. Each cold pass gets a fresh
// one so that its caches are empty and its rusage at exit is its own.
type mountProc struct {
	bin, dir string
	cmd      *exec.Cmd
	stderr   *tailBuffer
	done     chan struct{} // closed when cmd.Wait returns
	waitErr  error
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
	m := &mountProc{bin: bin, dir: dir, cmd: cmd, stderr: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
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
			if !signalled && strings.HasPrefix(sc.Text(), "ready:") {
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
	MaxRSS     int64 // bytes
}

// stop unmounts with SIGTERM and waits for a clean exit; if the process
// does not exit in time it is killed and the mountpoint cleared with
// `modelfs unmount`. The usage comes from the child's rusage at exit.
func (m *mountProc) stop() (exitUsage, error) {
	defer m.forget()
	var errs []error
	select {
	case <-m.done:
	default:
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
			errs = append(errs, fmt.Errorf("modelfs mount ignored SIGTERM for 30s; killed"))
		}
	}
	if m.waitErr != nil {
		errs = append(errs, fmt.Errorf("modelfs mount exited with %v\n%s", m.waitErr, m.stderr))
	}
	if mounted(m.dir) {
		if out, err := exec.Command(m.bin, "unmount", m.dir).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("modelfs unmount %s: %v: %s", m.dir, err, out))
		}
	}
	var u exitUsage
	if ps := m.cmd.ProcessState; ps != nil {
		u.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			u.MaxRSS = ru.Maxrss << 10 // KiB on Linux
		}
	}
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

// mounted reports whether dir is a mountpoint, from /proc/self/mountinfo.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// Field 5 is the mount point, with spaces and such octal-escaped.
		if f := strings.Fields(line); len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tailBuffer keeps the last max bytes written: the mount's log, for error
// messages.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}
