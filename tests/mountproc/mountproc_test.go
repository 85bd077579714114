package mountproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The ready line ends the wait; SIGTERM, handled, is a clean stop.
func TestStartReadyThenStop(t *testing.T) {
	// The shell exits 0 on SIGTERM once its short sleep returns.
	cmd := exec.Command("sh", "-c", `trap 'echo bye >&2; exit 0' TERM; echo "ready: served"; while :; do sleep 0.05; done`)
	p, err := Start(context.Background(), cmd, Options{Label: "sh"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Alive() || p.ReadyLine() != "ready: served" {
		t.Fatalf("alive %v, ready line %q", p.Alive(), p.ReadyLine())
	}
	if _, err := p.CPUSeconds(); err != nil {
		t.Errorf("CPU of a live process: %v", err)
	}
	u, err := p.Stop()
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if u.PeakRSS <= 0 {
		t.Errorf("peak RSS %d before stopping a live process", u.PeakRSS)
	}
	if !strings.Contains(p.Log(), "bye") {
		t.Errorf("stderr not kept: %q", p.Log())
	}
}

// A process that fails before ready is an ExitError carrying its one-line
// error message and its log.
func TestStartExitBeforeReady(t *testing.T) {
	cmd := exec.Command("sh", "-c", `echo "some log" >&2; echo "modelfs: --retries -1: want 0 or more" >&2; exit 1`)
	_, err := Start(context.Background(), cmd, Options{})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("got %v, want an ExitError", err)
	}
	if ee.Message != "--retries -1: want 0 or more" || ee.Err == nil || !strings.Contains(ee.Log, "some log") {
		t.Errorf("ExitError %+v", ee)
	}
}

// A process that never gets ready is killed once the wait is over.
func TestStartTimeout(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	t0 := time.Now()
	_, err := Start(context.Background(), cmd, Options{ReadyTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "not ready after") {
		t.Fatalf("got %v, want a timeout", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the wait took %v", d)
	}
	if cmd.ProcessState == nil {
		t.Error("the process was left running")
	}
}

// A process that ignores SIGTERM is killed once StopTimeout passes, and
// Stop says so.
func TestStopKillsStubbornProcess(t *testing.T) {
	cmd := exec.Command("sh", "-c", `trap '' TERM; echo "ready: x"; while :; do sleep 0.05; done`)
	p, err := Start(context.Background(), cmd, Options{StopTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stop(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("stop of a process ignoring SIGTERM: %v", err)
	}
	if p.Alive() {
		t.Fatal("still alive")
	}
}

func TestUsageOfSelf(t *testing.T) {
	if _, err := CPUSeconds(os.Getpid()); err != nil {
		t.Error(err)
	}
	rss, peak, err := Memory(os.Getpid())
	if err != nil || rss <= 0 || peak < rss {
		t.Errorf("rss %d, peak %d, %v", rss, peak, err)
	}
	if _, err := CPUSeconds(-1); err == nil {
		t.Error("CPU of no process")
	}
}

// TestLogOmit feeds a log in chunks that split lines, as a pipe does, and
// checks that only the omitted lines are left out.
func TestLogOmit(t *testing.T) {
	const noise = "trySplice: splice: want "
	var log strings.Builder
	for range 1000 {
		log.WriteString("2026/11/27 16:28:25 trySplice: splice: want 1052688 bytes, max pipe size 1048576\n")
	}
	log.WriteString("level=ERROR msg=\"read failed\" file=a\n")
	log.WriteString("level=INFO msg=unmounted fuse_reads=5 fuse_read_bytes=10\n")
	log.WriteString("no newline at the end")
	lines := 0
	l := &Log{Max: 4096, Omit: noise, OnLine: func(string) { lines++ }}
	s := log.String()
	for i := 0; i < len(s); i += 37 {
		l.Write([]byte(s[i:min(i+37, len(s))]))
	}
	got := l.String()
	if strings.Count(got, "trySplice") != 1 || !strings.Contains(got, "(1000 lines") {
		t.Errorf("noise not counted and dropped:\n%.300s", got)
	}
	for _, want := range []string{`msg="read failed"`, "msg=unmounted fuse_reads=5", "no newline at the end"} {
		if !strings.Contains(got, want) {
			t.Errorf("lost %q:\n%s", want, got)
		}
	}
	if lines != 1002 {
		t.Errorf("OnLine saw %d complete lines, want 1002", lines)
	}
	plain := &Log{Max: 8}
	plain.Write([]byte("0123456789"))
	if plain.String() != "23456789" {
		t.Errorf("plain tail = %q", plain.String())
	}
}

// A file shrunk under its mapping raises SIGBUS past its new end, as a
// failing FUSE read does; ReadMapped makes that an error naming the
// offset.
func TestReadMappedFault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	var acc byte
	size, err := ReadMapped(path, func(f *os.File, data []byte) error {
		acc = TouchPages(data, 0, int64(len(data)))
		return nil
	})
	if err != nil || size != 64<<10 || acc != 0 {
		t.Fatalf("whole file: size %d, %v", size, err)
	}
	_, err = ReadMapped(path, func(f *os.File, data []byte) error {
		if err := os.Truncate(f.Name(), 8192); err != nil {
			return err
		}
		acc ^= TouchPages(data, 0, int64(len(data)))
		return nil
	})
	if acc != 0 {
		t.Errorf("read %d from a file of zeros", acc)
	}
	g := regexp.MustCompile(`^fault reading mapping at offset (\d+)$`).FindStringSubmatch(errString(err))
	if g == nil {
		t.Fatalf("got %v, want a fault", err)
	}
	if off, _ := strconv.ParseInt(g[1], 10, 64); off != 8192 {
		t.Errorf("fault at %d, want 8192, the first page cut off", off)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// fatalRecorder is a Fataler that notes the failure instead of ending the
// test.
type fatalRecorder struct{ msg string }

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, "three polls", time.Minute, func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("polled %d times", n)
	}
	var f fatalRecorder
	t0 := time.Now()
	WaitFor(&f, "never", 50*time.Millisecond, func() bool { return false })
	if !strings.Contains(f.msg, "waiting for never") || time.Since(t0) > 10*time.Second {
		t.Errorf("failure %q after %v", f.msg, time.Since(t0))
	}
}
