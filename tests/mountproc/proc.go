package mountproc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/internal/mountinfo"
	"github.com/modelfs/modelfs/mount/config"
)

// Options says how to start, wait for and stop one daemon.
type Options struct {
	// Mountpoint is the directory the process mounts; it is detached if
	// the process does not unmount it itself.
	Mountpoint string
	// Label names the process in errors; the command's base name if "".
	Label string
	// ReadyTimeout bounds the wait for ready (default a minute);
	// StopTimeout, the wait for exit once told to stop (default 30s).
	ReadyTimeout, StopTimeout time.Duration
	// NoReadyLine is for another FUSE daemon, which prints no ready line:
	// it is ready once Mountpoint is in the mount table, and its stdout
	// joins its log.
	NoReadyLine bool
	// UnmountToStop stops the daemon by unmounting its filesystem
	// (fusermount3 -u), as the other FUSE daemons document, before
	// falling back to SIGTERM; modelfs unmounts on SIGTERM.
	UnmountToStop bool
	// Log receives the process's stderr; a new Log that keeps everything
	// if nil.
	Log *Log
}

// Proc is one running daemon.
type Proc struct {
	cmd   *exec.Cmd
	opts  Options
	log   *Log
	ready chan string // the ready line, once
	// readyLine is the ready line Start saw; "" with NoReadyLine.
	readyLine string

	exited  chan struct{} // closed when cmd.Wait has returned
	waitErr error         // valid once exited is closed

	mu     sync.Mutex
	killed bool // ended on purpose by Kill
}

// Usage is what the process used over its life.
type Usage struct {
	// CPUSeconds is its user+system time from its rusage at exit.
	CPUSeconds float64
	// PeakRSS is its VmHWM in bytes, read just before it was told to stop;
	// 0 if it had exited by then.
	PeakRSS int64
}

// ExitError is a process that exited before it was ready.
type ExitError struct {
	Label string
	Err   error // its exit status; nil if it exited 0
	// Message is its one-line error (after config.ErrorPrefix), or "".
	Message string
	// Log is its stderr.
	Log string
}

func (e *ExitError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%s exited before it was ready (%v): %s", e.Label, e.Err, e.Message)
	}
	return fmt.Sprintf("%s exited before it was ready (%v)\n%s", e.Label, e.Err, e.Log)
}

func (e *ExitError) Unwrap() error { return e.Err }

// Start starts cmd and waits, bounded by opts.ReadyTimeout and ctx, until
// it is ready. The harness takes cmd's stdout (for the ready line) and
// stderr (its Log). If it exits first the error is an *ExitError; on a
// timeout or ctx's end it is killed and its mountpoint detached.
func Start(ctx context.Context, cmd *exec.Cmd, opts Options) (*Proc, error) {
	if opts.Label == "" {
		opts.Label = filepath.Base(cmd.Path)
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = time.Minute
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.NoReadyLine && opts.Mountpoint == "" {
		return nil, errors.New("mountproc: NoReadyLine needs a Mountpoint to watch")
	}
	p := &Proc{cmd: cmd, opts: opts, log: opts.Log, ready: make(chan string, 1), exited: make(chan struct{})}
	if p.log == nil {
		p.log = &Log{}
	}
	cmd.Stderr = p.log
	if opts.NoReadyLine {
		cmd.Stdout = p.log
	} else {
		// Written from exec's copying goroutine, line by line.
		cmd.Stdout = &Log{Max: 4 << 10, OnLine: func(line string) {
			if strings.HasPrefix(line, config.ReadyPrefix) {
				select {
				case p.ready <- line:
				default:
				}
			}
		}}
	}
	// A child that outlives the process (and holds its pipes) must not
	// hold up Wait for long.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", opts.Label, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	timeout := time.NewTimer(opts.ReadyTimeout)
	defer timeout.Stop()
	var mountTable <-chan time.Time
	if opts.NoReadyLine {
		// The mount table has nothing to wait on: poll it.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		mountTable = tick.C
	}
	for {
		select {
		case p.readyLine = <-p.ready:
			return p, nil
		case <-mountTable:
			if ok, err := mountinfo.IsMounted(opts.Mountpoint); err == nil && ok {
				return p, nil
			}
		case <-p.exited:
			return nil, p.exitError()
		case <-timeout.C:
			p.abandon()
			return nil, fmt.Errorf("%s not ready after %v\n%s", opts.Label, opts.ReadyTimeout, p.log)
		case <-ctx.Done():
			p.abandon()
			return nil, fmt.Errorf("waiting for %s: %w", opts.Label, ctx.Err())
		}
	}
}

func (p *Proc) exitError() *ExitError {
	e := &ExitError{Label: p.opts.Label, Err: p.waitErr, Log: p.log.String()}
	lines := strings.Split(e.Log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if msg, ok := strings.CutPrefix(lines[i], config.ErrorPrefix); ok {
			e.Message = msg
			break
		}
	}
	return e
}

// ReadyLine is the line the process printed when ready ("ready: ...");
// "" for a daemon started with NoReadyLine.
func (p *Proc) ReadyLine() string { return p.readyLine }

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Log is what the process has written to stderr so far.
func (p *Proc) Log() string { return p.log.String() }

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Alive reports whether the process is still running.
func (p *Proc) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Err is the process's exit status once it has exited (nil for 0).
func (p *Proc) Err() error {
	<-p.exited
	return p.waitErr
}

// CPUSeconds is the CPU time the process has used so far.
func (p *Proc) CPUSeconds() (float64, error) { return CPUSeconds(p.Pid()) }

// PeakRSS is the process's VmHWM so far.
func (p *Proc) PeakRSS() (int64, error) { return PeakRSS(p.Pid()) }

// Memory is the process's VmRSS and VmHWM.
func (p *Proc) Memory() (rss, peak int64, err error) { return Memory(p.Pid()) }

// Stop tells the process to stop (SIGTERM, or an unmount first with
// UnmountToStop) and waits, bounded by StopTimeout, for it to exit; past
// that it is killed. It reports anything but a clean exit and a clean
// mountpoint, clearing the mountpoint when the process left it mounted.
// Stopping a process that has already exited reports its exit status, or
// nothing after Kill.
func (p *Proc) Stop() (Usage, error) {
	var u Usage
	var errs []error
	if p.Alive() {
		u.PeakRSS, _ = p.PeakRSS()
		if !p.opts.UnmountToStop || p.opts.Mountpoint == "" ||
			exec.Command("fusermount3", "-u", p.opts.Mountpoint).Run() != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
		t := time.NewTimer(p.opts.StopTimeout)
		select {
		case <-p.exited:
		case <-t.C:
			p.Kill()
			errs = append(errs, fmt.Errorf("%s did not exit within %v of being told to stop; killed", p.opts.Label, p.opts.StopTimeout))
		}
		t.Stop()
	}
	<-p.exited
	p.mu.Lock()
	killed := p.killed
	p.mu.Unlock()
	if p.waitErr != nil && !killed {
		errs = append(errs, fmt.Errorf("%s exited with %v\n%s", p.opts.Label, p.waitErr, p.log))
	}
	if err := p.clearMountpoint(); err != nil {
		errs = append(errs, fmt.Errorf("%s left its mountpoint mounted: %w", p.opts.Label, err))
	}
	if ps := p.cmd.ProcessState; ps != nil {
		u.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return u, errors.Join(errs...)
}

// Kill ends the process at once (SIGKILL) and waits for it, leaving its
// mountpoint as a crash would: stale. Stop afterwards reports no error
// for the kill and detaches the mountpoint.
func (p *Proc) Kill() {
	if p.Alive() {
		p.mu.Lock()
		p.killed = true
		p.mu.Unlock()
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}

// abandon kills the process and detaches its mountpoint, for the paths
// that give up on it.
func (p *Proc) abandon() {
	p.Kill()
	_ = p.clearMountpoint()
}

// clearMountpoint detaches the mountpoint if it is still mounted; nil if
// it was not (or there is none).
func (p *Proc) clearMountpoint() error {
	if p.opts.Mountpoint == "" {
		return nil
	}
	if ok, err := mountinfo.IsMounted(p.opts.Mountpoint); err != nil || !ok {
		return nil
	}
	if err := mountinfo.Unmount(p.opts.Mountpoint); err != nil {
		return err
	}
	return fmt.Errorf("%s was still mounted; detached", p.opts.Mountpoint)
}
