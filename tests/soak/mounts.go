package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/mount/config"
)

// mountProc is one running `modelfs mount` process.
type mountProc struct {
	name    string // the model it serves
	dir     string // mountpoint
	logPath string // its stderr
	metrics string // /metrics URL
	cmd     *exec.Cmd

	exited  chan struct{} // closed when the process has exited
	waitErr error         // its exit status, once exited is closed

	// readFailures counts the "read failed" lines it logged: reads it
	// answered with EIO. Its read error counter also counts reads the
	// kernel interrupted, which the reader retries and never sees fail.
	readFailures atomic.Int64

	rss rssSampler
}

// startMount runs modelfs mount and waits for it to be ready.
func startMount(ctx context.Context, bin, name, source, dir, logPath string, args, env []string) (*mountProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	full := append(append([]string{"mount"}, args...), source, dir)
	cmd := exec.Command(bin, full...)
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	m := &mountProc{name: name, dir: dir, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	addr := make(chan string, 1)
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stdout)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), config.ReadyPrefix) {
				once()
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		// Copy the log to its file, picking out the metrics address.
		defer pipes.Done()
		defer logFile.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if strings.Contains(line, `msg="read failed"`) {
				m.readFailures.Add(1)
			}
			if !found && strings.Contains(line, "serving metrics") {
				for _, f := range strings.Fields(line) {
					if a, ok := strings.CutPrefix(f, "addr="); ok {
						addr <- a
						found = true
					}
				}
			}
		}
		io.Copy(logFile, stderr)
	}()
	go func() {
		// Wait only once both pipes are drained, as exec.Cmd requires.
		pipes.Wait()
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	select {
	case <-ready:
	case <-m.exited:
		return nil, fmt.Errorf("modelfs mount of %s exited before it was ready (%v); log: %s", name, m.waitErr, logPath)
	case <-timeout.C:
		m.kill()
		return nil, fmt.Errorf("modelfs mount of %s not ready after 2 minutes; log: %s", name, logPath)
	case <-ctx.Done():
		m.kill()
		return nil, ctx.Err()
	}
	// The address is logged before the mount is made, so before ready,
	// but on the other pipe: it may not have been read yet.
	select {
	case a := <-addr:
		m.metrics = "http://" + a + "/metrics"
	case <-m.exited:
		return nil, fmt.Errorf("modelfs mount of %s exited at once (%v); log: %s", name, m.waitErr, logPath)
	case <-timeout.C:
		m.kill()
		return nil, fmt.Errorf("modelfs mount of %s logged no metrics address; log: %s", name, logPath)
	}
	return m, nil
}

// alive reports whether the process is still running.
func (m *mountProc) alive() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// stop unmounts with SIGTERM and reports anything but a clean exit.
func (m *mountProc) stop() error {
	if !m.alive() {
		return fmt.Errorf("mount of %s had already exited: %v", m.name, m.waitErr)
	}
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-m.exited:
		if m.waitErr != nil {
			return fmt.Errorf("mount of %s exited with %v after SIGTERM; log: %s", m.name, m.waitErr, m.logPath)
		}
		return nil
	case <-t.C:
		m.kill()
		return fmt.Errorf("mount of %s did not exit within a minute of SIGTERM; log: %s", m.name, m.logPath)
	}
}

// kill ends the process and detaches its mount, for when it cannot be
// stopped cleanly.
func (m *mountProc) kill() {
	if m.alive() {
		m.cmd.Process.Kill()
		<-m.exited
	}
	syscall.Unmount(m.dir, syscall.MNT_DETACH)
}

// rssSampler keeps the highest VmRSS and VmHWM seen of a process.
type rssSampler struct {
	mu       sync.Mutex
	rss, hwm int64 // highest seen
	last     int64 // VmRSS at the last sample
	samples  int
}

// sample reads /proc/PID/status once; false once the process is gone.
func (s *rssSampler) sample(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	rss, hwm := statusKB(b, "VmRSS:"), statusKB(b, "VmHWM:")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rss = max(s.rss, rss)
	s.hwm = max(s.hwm, hwm)
	s.last = rss
	s.samples++
	return true
}

// peak is the highest RSS seen: VmHWM, the kernel's own high-water mark,
// also covers peaks between samples.
func (s *rssSampler) peak() (rss, hwm int64, samples int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rss, s.hwm, s.samples
}

// current is VmRSS at the last sample.
func (s *rssSampler) current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func statusKB(status []byte, field string) int64 {
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampleRSS samples every mount until stop is closed.
func sampleRSS(mounts []*mountProc, every time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		for _, m := range mounts {
			if m.alive() {
				m.rss.sample(m.cmd.Process.Pid)
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// mountEnv is the environment of the mount processes: the soak's S3
// credentials and nothing from the AWS configuration of the host.
func mountEnv() []string {
	return append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull)
}

// absBinary resolves a binary path before any directory changes matter,
// and checks it is there.
func absBinary(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%w (run make build tools)", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", errors.New(abs + " is not an executable")
	}
	return abs, nil
}
