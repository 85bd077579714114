package csi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/internal/mountinfo"
	"github.com/modelfs/modelfs/mount/config"
)

// record is what the plugin remembers about a volume it mounted, so that a
// restarted plugin can find and unpublish it. It holds no secrets.
type record struct {
	VolumeID string    `json:"volumeID"`
	Target   string    `json:"target"`
	PID      int       `json:"pid"`
	Source   string    `json:"source"`
	Started  time.Time `json:"started"`
	// Cgroup is the mount process's own cgroup directory, if it has one.
	Cgroup string `json:"cgroup,omitempty"`
}

// mounter runs one `modelfs mount` process per volume. Each runs in its own
// session, so the plugin's exit (a crash, a rollout) does not take it down:
// volumes in use keep working and a new plugin adopts them from the records.
type mounter struct {
	bin     string
	dir     string // records and mount logs
	timeout time.Duration
	log     *slog.Logger
	cg      *memcg // nil: mounts share the plugin's cgroup

	mu     sync.Mutex
	exited map[string]chan struct{} // target -> closed when a child of ours exits

	// died, if set, hears of each mount process of ours that exits after
	// its mount came up, whatever the reason (an unmount too).
	died func(target string, pid int)
}

func newMounter(bin, stateDir string, timeout time.Duration, log *slog.Logger) (*mounter, error) {
	dir := filepath.Join(stateDir, "volumes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	return &mounter{bin: bin, dir: dir, timeout: timeout, log: log, exited: map[string]chan struct{}{}}, nil
}

func (m *mounter) key(target string) string {
	sum := sha256.Sum256([]byte(target))
	return hex.EncodeToString(sum[:12])
}

func (m *mounter) recordPath(target string) string {
	return filepath.Join(m.dir, m.key(target)+".json")
}
func (m *mounter) logPath(target string) string { return filepath.Join(m.dir, m.key(target)+".log") }

// metricsSocket is where target's mount process serves its metrics.
func (m *mounter) metricsSocket(target string) string {
	return filepath.Join(m.dir, m.key(target)+".sock")
}

func (m *mounter) load(target string) (*record, error) {
	r, err := m.loadFile(m.recordPath(target))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if r.Target != target {
		return nil, fmt.Errorf("volume record %s is damaged", m.recordPath(target))
	}
	return r, nil
}

// loadFile reads a record, and checks it is stored where its target's
// record belongs.
func (m *mounter) loadFile(path string) (*record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading volume record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.Target == "" || m.recordPath(r.Target) != path {
		return nil, fmt.Errorf("volume record %s is damaged", path)
	}
	return &r, nil
}

func (m *mounter) save(r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := m.recordPath(r.Target) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing volume record: %w", err)
	}
	if err := os.Rename(tmp, m.recordPath(r.Target)); err != nil {
		return fmt.Errorf("writing volume record: %w", err)
	}
	return nil
}

func (m *mounter) forget(target string) {
	os.Remove(m.recordPath(target))
	os.Remove(m.logPath(target))
	os.Remove(m.metricsSocket(target))
	os.Remove(m.tokenPath(target))
}

// start runs a mount process for target and returns once the mount is up.
// env holds the credentials; args never do. memLimit bounds the process's
// memory where the node has a cgroup memory controller to spare.
func (m *mounter) start(ctx context.Context, volumeID, source, target string, args, env []string, memLimit int64) error {
	logf, err := os.OpenFile(m.logPath(target), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("mount log: %w", err)
	}
	defer logf.Close() // the child keeps its own copy
	cmd := exec.Command(m.bin, args...)
	cmd.Env = env
	// A file, not a pipe: a pipe would break when the plugin exits and
	// take the mount process with it.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var cgroup string
	if m.cg != nil {
		if cgroup, err = m.cg.create(m.key(target), memLimit); err != nil {
			m.log.Warn("volume runs without its own memory limit", "target", target, "err", err)
		}
	}
	if err := cmd.Start(); err != nil {
		m.removeCgroup(cgroup)
		return fmt.Errorf("starting %s: %w", m.bin, err)
	}
	if cgroup != "" {
		// Moved right after the fork: what it allocates before is small.
		if err := joinCgroup(cgroup, cmd.Process.Pid); err != nil {
			m.log.Warn("volume runs without its own memory limit", "target", target, "err", err)
			m.removeCgroup(cgroup)
			cgroup = ""
		}
	}
	exited := make(chan struct{})
	m.mu.Lock()
	m.exited[target] = exited
	m.mu.Unlock()
	// up is set once the mount came up; told makes sure died hears of
	// the exit once, whichever of the reaper and start sees it first.
	var up, told atomic.Bool
	pid := cmd.Process.Pid
	tell := func() {
		if up.Load() && m.died != nil && told.CompareAndSwap(false, true) {
			go m.died(target, pid)
		}
	}
	// Reap the child whenever it ends, or it lingers as a zombie.
	go func() {
		cmd.Wait()
		close(exited)
		m.mu.Lock()
		if m.exited[target] == exited {
			delete(m.exited, target)
		}
		m.mu.Unlock()
		tell()
	}()
	if err := m.save(&record{VolumeID: volumeID, Target: target, PID: cmd.Process.Pid, Source: source, Started: time.Now(), Cgroup: cgroup}); err != nil {
		cmd.Process.Kill()
		<-exited
		m.removeCgroup(cgroup)
		return err
	}
	if err := m.waitMounted(ctx, target, exited); err != nil {
		cmd.Process.Kill()
		<-exited
		m.removeCgroup(cgroup)
		m.forget(target)
		return err
	}
	up.Store(true)
	select {
	case <-exited: // died at once: the reaper saw it before up was set
		tell()
	default:
	}
	return nil
}

// waitMounted polls the mount table: the mount process gives no other
// signal that survives the plugin, and listing the source can take a while.
func (m *mounter) waitMounted(ctx context.Context, target string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := mountinfo.IsMounted(target); err != nil {
			return err
		} else if ok {
			return nil
		}
		select {
		case <-exited:
			return &mountError{msg: m.lastError(target)}
		case <-ctx.Done():
			return fmt.Errorf("mount of %s not up after %s: %w", target, m.timeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// mountError is a mount process that exited before mounting; msg is its
// one-line error, which names no secret.
type mountError struct{ msg string }

func (e *mountError) Error() string { return e.msg }

// lastError returns the mount process's error line from its log.
func (m *mounter) lastError(target string) string {
	b, _ := os.ReadFile(m.logPath(target))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if msg, ok := strings.CutPrefix(lines[i], config.ErrorPrefix); ok {
			return msg
		}
	}
	if len(lines) > 0 && lines[len(lines)-1] != "" {
		return "mount exited: " + lines[len(lines)-1]
	}
	return "mount exited without an error message"
}

// mountState is what probe found at a target.
type mountState int

const (
	notMounted mountState = iota
	answering             // mounted, and the filesystem answers
	broken                // mounted, but its server is gone (ENOTCONN and the like)
	wedged                // mounted, and no answer within the probe timeout
)

func (s mountState) String() string {
	return [...]string{"not mounted", "answering", "broken", "wedged"}[s]
}

// probe reports the state of target's mount within timeout. A FUSE server
// that stopped answering blocks every open and read of its mount for good,
// so the read runs in a goroutine of its own; on timeout it is left
// behind, and ends once the mount's server dies or its connection is
// aborted (detach does that).
func probe(target string, timeout time.Duration) (mountState, error) {
	mounted, err := mountinfo.IsMounted(target)
	if err != nil || !mounted {
		return notMounted, err
	}
	done := make(chan error, 1)
	go func() {
		f, err := os.Open(target)
		if err == nil {
			_, err = f.Readdirnames(1)
			f.Close()
		}
		done <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, io.EOF) {
			return answering, nil
		}
		return broken, nil
	case <-t.C:
		return wedged, nil
	}
}

// detach takes a mount out of the way without waiting on its server: it
// aborts the FUSE connection, which fails the requests stuck on it (a
// probe's among them), then unmounts lazily.
func detach(target string) error {
	dev, err := mountinfo.MountDevice(target)
	if err != nil || dev == "" {
		return err
	}
	if _, minor, ok := strings.Cut(dev, ":"); ok {
		// Best effort: fusectl may not be mounted in the container; the
		// server's death aborts the connection as well.
		_ = os.WriteFile(filepath.Join("/sys/fs/fuse/connections", minor, "abort"), []byte("1"), 0)
	}
	if err := syscall.Unmount(target, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching %s: %w", target, err)
	}
	return nil
}

// stop unmounts target, waits for its mount process to exit and removes
// the target directory. It is idempotent.
func (m *mounter) stop(ctx context.Context, target string) error {
	rec, err := m.load(target)
	if err != nil {
		m.log.Warn("ignoring damaged volume record", "target", target, "err", err)
	}
	mounted, err := mountinfo.IsMounted(target)
	if err != nil {
		return err
	}
	if mounted {
		if err := mountinfo.Unmount(target); err != nil {
			return err
		}
	}
	if rec != nil {
		m.waitExit(ctx, rec)
		m.removeCgroup(rec.Cgroup)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", target, err)
	}
	m.forget(target)
	return nil
}

// waitExit waits for a record's mount process to end after its unmount,
// then ends it: a mount process left running after its mount is gone would
// hold memory and cache locks forever.
func (m *mounter) waitExit(ctx context.Context, rec *record) {
	m.mu.Lock()
	exited := m.exited[rec.Target]
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if exited != nil {
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
	} else {
		// Adopted from an earlier plugin: not our child, so poll.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
	poll:
		for ownsTarget(rec) {
			select {
			case <-ctx.Done():
				break poll
			case <-tick.C:
			}
		}
	}
	if ownsTarget(rec) {
		m.log.Warn("mount process outlived its unmount; stopping it", "target", rec.Target, "pid", rec.PID)
		syscall.Kill(rec.PID, syscall.SIGKILL)
	}
}

// removeCgroup removes a volume's cgroup after its process exited; one
// left behind (still busy) is swept when the plugin next starts.
func (m *mounter) removeCgroup(dir string) {
	err := removeCgroup(dir)
	if errors.Is(err, syscall.EBUSY) {
		// A process that was not our child leaves its cgroup only once
		// its parent (the supervisor) reaps it: give that a moment.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(5 * time.Second)
	retry:
		for errors.Is(err, syscall.EBUSY) {
			select {
			case <-deadline:
				break retry
			case <-tick.C:
				err = removeCgroup(dir)
			}
		}
	}
	if err != nil {
		m.log.Warn("volume cgroup not removed", "err", err)
	}
}

// ownsTarget reports whether rec's process is still a modelfs mount of
// rec's target (and not a recycled pid).
func ownsTarget(rec *record) bool {
	if rec.PID <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rec.PID))
	if err != nil {
		return false
	}
	// A zombie has an empty cmdline: it is gone but for reaping.
	args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	return len(args) > 1 && string(args[len(args)-1]) == rec.Target
}

// adopt runs when the plugin starts: volumes still mounted and answering
// are kept; stale mounts (their process died) and wedged ones (their
// process stopped answering) are detached and forgotten. Each mount is
// probed at once, within timeout, so that no mount can hold up the plugin.
func (m *mounter) adopt(timeout time.Duration) (res adoption) {
	inUse := map[string]bool{}
	defer m.sweepCgroups(inUse)
	entries, _ := os.ReadDir(m.dir)
	var recs []*record
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		rec, err := m.loadFile(filepath.Join(m.dir, e.Name()))
		if err != nil {
			m.log.Warn("removing damaged volume record", "file", e.Name())
			os.Remove(filepath.Join(m.dir, e.Name()))
			res.Damaged++
			continue
		}
		recs = append(recs, rec)
	}
	states := make([]mountState, len(recs))
	var wg sync.WaitGroup
	for i, rec := range recs {
		wg.Go(func() { states[i], _ = probe(rec.Target, timeout) })
	}
	wg.Wait()
	for i, rec := range recs {
		if states[i] == answering && ownsTarget(rec) {
			inUse[rec.Cgroup] = true
			m.log.Info("adopted volume", "volume_id", rec.VolumeID, "target", rec.Target, "pid", rec.PID)
			res.Kept++
			continue
		}
		if states[i] == wedged {
			m.log.Warn("volume's mount does not answer; stopping its process and detaching it", "volume_id", rec.VolumeID,
				"target", rec.Target, "pid", rec.PID, "timeout", timeout)
		}
		// The server goes first: killing it fails whatever waits on the
		// mount, so the detach cannot be held up.
		if ownsTarget(rec) {
			syscall.Kill(rec.PID, syscall.SIGKILL)
		}
		if states[i] != notMounted {
			if err := detach(rec.Target); err != nil {
				m.log.Warn("could not detach stale mount", "target", rec.Target, "err", err)
				res.Failed++
				continue
			}
		}
		m.removeCgroup(rec.Cgroup)
		m.log.Warn("cleaned up a volume whose mount process is gone; pods using it must be restarted", "volume_id", rec.VolumeID, "target", rec.Target, "state", states[i].String())
		m.forget(rec.Target)
		if states[i] == wedged {
			res.Wedged++
		} else {
			res.Cleaned++
		}
	}
	return res
}

// adoption counts what adopt did with the volumes it found.
type adoption struct {
	Kept    int // answering, and adopted
	Cleaned int // stale (gone or broken) and cleaned up
	Wedged  int // not answering, detached and cleaned up
	Damaged int // records that could not be read
	Failed  int // could not be detached; their records are kept
}

// sweepCgroups removes the volume cgroups no adopted volume uses: those
// left by volumes whose process outlived its unmount, or died. A cgroup
// that still holds a process cannot be removed and is kept.
func (m *mounter) sweepCgroups(inUse map[string]bool) {
	if m.cg == nil {
		return
	}
	entries, _ := os.ReadDir(m.cg.parent)
	for _, e := range entries {
		dir := filepath.Join(m.cg.parent, e.Name())
		if e.IsDir() && strings.HasPrefix(e.Name(), volumeCgroupPrefix) && !inUse[dir] {
			_ = removeCgroup(dir)
		}
	}
}
