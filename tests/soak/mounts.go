package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelfs/modelfs/tests/mountproc"
)

// mountProc is one running `modelfs mount` process.
type mountProc struct {
	*mountproc.Proc
	name    string // the model it serves
	dir     string // mountpoint
	logPath string // its stderr
	metrics string // /metrics URL

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
	m := &mountProc{name: name, dir: dir, logPath: logPath}
	addr := make(chan string, 1)
	log := &mountproc.Log{Max: 16 << 10, OnLine: func(line string) {
		// Copy the log to its file, picking out the metrics address.
		fmt.Fprintln(logFile, line)
		if strings.Contains(line, `msg="read failed"`) {
			m.readFailures.Add(1)
		}
		if strings.Contains(line, "serving metrics") {
			for _, f := range strings.Fields(line) {
				if a, ok := strings.CutPrefix(f, "addr="); ok {
					select {
					case addr <- a:
					default:
					}
				}
			}
		}
	}}
	cmd := exec.Command(bin, append(append([]string{"mount"}, args...), source, dir)...)
	cmd.Env = env
	p, err := mountproc.Start(ctx, cmd, mountproc.Options{
		Mountpoint: dir, Label: "modelfs mount of " + name, Log: log,
		ReadyTimeout: 2 * time.Minute, StopTimeout: time.Minute,
	})
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%w; log: %s", err, logPath)
	}
	m.Proc = p
	go func() {
		// The log is complete once the process has exited.
		<-p.Exited()
		logFile.Close()
	}()
	// The address is logged before the mount is made, so before ready,
	// but on the other pipe: it may not have been read yet.
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	select {
	case a := <-addr:
		m.metrics = "http://" + a + "/metrics"
	case <-p.Exited():
		return nil, fmt.Errorf("modelfs mount of %s exited at once (%v); log: %s", name, p.Err(), logPath)
	case <-timeout.C:
		m.abandon()
		return nil, fmt.Errorf("modelfs mount of %s logged no metrics address; log: %s", name, logPath)
	}
	return m, nil
}

// stop unmounts with SIGTERM and reports anything but a clean exit.
func (m *mountProc) stop() error {
	if !m.Alive() {
		return fmt.Errorf("mount of %s had already exited: %v; log: %s", m.name, m.Err(), m.logPath)
	}
	if _, err := m.Stop(); err != nil {
		return fmt.Errorf("%w; log: %s", err, m.logPath)
	}
	return nil
}

// abandon ends the process and detaches its mount, for when it cannot be
// stopped cleanly; a no-op for a mount stopped cleanly.
func (m *mountProc) abandon() {
	m.Kill()
	_, _ = m.Stop()
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
	rss, hwm, err := mountproc.Memory(pid)
	if err != nil {
		return false
	}
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

// sampleRSS samples every mount until stop is closed.
func sampleRSS(mounts []*mountProc, every time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		for _, m := range mounts {
			if m.Alive() {
				m.rss.sample(m.Pid())
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
