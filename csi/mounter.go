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
	"syscall"
	"time"

	"github.com/modelfs/modelfs/fs"
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

func (m *mounter) load(target string) (*record, error) {
	b, err := os.ReadFile(m.recordPath(target))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading volume record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.Target != target {
		return nil, fmt.Errorf("volume record %s is damaged", m.recordPath(target))
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
	// Reap the child whenever it ends, or it lingers as a zombie.
	go func() {
		cmd.Wait()
		close(exited)
		m.mu.Lock()
		if m.exited[target] == exited {
			delete(m.exited, target)
		}
		m.mu.Unlock()
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
		if ok, err := fs.IsMounted(target); err != nil {
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
		if msg, ok := strings.CutPrefix(lines[i], "modelfs: "); ok {
			return msg
		}
	}
	if len(lines) > 0 && lines[len(lines)-1] != "" {
		return "mount exited: " + lines[len(lines)-1]
	}
	return "mount exited without an error message"
}

// live reports whether target is a working mount: mounted, and the
// filesystem answers.
func live(target string) (bool, error) {
	mounted, err := fs.IsMounted(target)
	if err != nil || !mounted {
		return false, err
	}
	f, err := os.Open(target)
	if err == nil {
		_, err = f.Readdirnames(1)
		f.Close()
	}
	if err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, nil
}

// stop unmounts target, waits for its mount process to exit and removes
// the target directory. It is idempotent.
func (m *mounter) stop(ctx context.Context, target string) error {
	rec, err := m.load(target)
	if err != nil {
		m.log.Warn("ignoring damaged volume record", "target", target, "err", err)
	}
	mounted, err := fs.IsMounted(target)
	if err != nil {
		return err
	}
	if mounted {
		if err := fs.Unmount(target); err != nil {
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
// are kept; stale mounts (their process died) are detached and forgotten.
func (m *mounter) adopt() (kept, cleaned int) {
	inUse := map[string]bool{}
	defer m.sweepCgroups(inUse)
	entries, _ := os.ReadDir(m.dir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.dir, e.Name()))
		var rec record
		if err != nil || json.Unmarshal(b, &rec) != nil || rec.Target == "" || m.recordPath(rec.Target) != filepath.Join(m.dir, e.Name()) {
			m.log.Warn("removing damaged volume record", "file", e.Name())
			os.Remove(filepath.Join(m.dir, e.Name()))
			continue
		}
		if ok, _ := live(rec.Target); ok && ownsTarget(&rec) {
			inUse[rec.Cgroup] = true
			m.log.Info("adopted volume", "volume_id", rec.VolumeID, "target", rec.Target, "pid", rec.PID)
			kept++
			continue
		}
		if mounted, _ := fs.IsMounted(rec.Target); mounted {
			if err := fs.Unmount(rec.Target); err != nil {
				m.log.Warn("could not detach stale mount", "target", rec.Target, "err", err)
				continue
			}
		}
		if ownsTarget(&rec) {
			syscall.Kill(rec.PID, syscall.SIGKILL)
		}
		m.removeCgroup(rec.Cgroup)
		m.log.Warn("cleaned up a volume whose mount process is gone; pods using it must be restarted", "volume_id", rec.VolumeID, "target", rec.Target)
		m.forget(rec.Target)
		cleaned++
	}
	return kept, cleaned
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
