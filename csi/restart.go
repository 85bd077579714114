package csi

import (
	"context"
	"time"

	"github.com/modelfs/modelfs/internal/mountinfo"
)

// Restarts: a volume's mount process that dies (a crash, the OOM killer)
// leaves its pod a mount whose every read fails. The plugin starts it again
// at the same target, with what it was published with, a bounded number
// of times with a growing pause, counting each try. Containers see the new
// mount where their volume mount propagates from the host
// (mountPropagation: HostToContainer); others keep the broken one until
// the pod restarts. Volumes adopted from an earlier plugin are not
// restarted: their secrets were never written down.

// publishSpec is what a volume was published with: enough to start its
// mount again. It holds the volume's secrets, in memory only.
type publishSpec struct {
	volumeID, source string
	args, env        []string
	memLimit         int64
	podToken         string // pod identity: the latest token, rewritten before a restart
	restarts         int
}

func (d *Driver) rememberPublish(target string, spec *publishSpec) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.published[target] = spec
}

// forgetPublish is called, under the target's lock, before an unpublish
// stops the mount: its exit is then no reason to restart it.
func (d *Driver) forgetPublish(target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.published, target)
}

func (d *Driver) publishedSpec(target string) *publishSpec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.published[target]
}

// setPodToken records a republished token for the next restart.
func (d *Driver) setPodToken(target, token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if spec := d.published[target]; spec != nil {
		spec.podToken = token
	}
}

// mountDied runs when one of the plugin's mount processes has exited.
func (d *Driver) mountDied(target string, pid int) {
	if d.opts.MaxRestarts <= 0 {
		return
	}
	for {
		spec := d.publishedSpec(target)
		if spec == nil {
			return // unpublished (or published anew, which owns it now)
		}
		if spec.restarts >= d.opts.MaxRestarts {
			d.metrics.restarts.WithLabelValues("gave_up").Inc()
			d.log.Error("volume's mount process keeps dying; not restarting it again: its pod must be restarted",
				"volume_id", spec.volumeID, "target", target, "restarts", spec.restarts)
			return
		}
		// 1, 2, 4, ... times RestartBackoff: a mount that dies at once
		// again is not restarted in a tight loop.
		pause := d.opts.RestartBackoff << spec.restarts
		t := time.NewTimer(pause)
		<-t.C
		// Once back, the new process's own exit, if any, starts over.
		if !d.restartOnce(target, pid) {
			return
		}
	}
}

// restartOnce starts target's mount again, under its lock, and reports
// whether to try again: false once the mount is back or no longer wanted.
func (d *Driver) restartOnce(target string, pid int) (retry bool) {
	unlock := d.lockTarget(target)
	defer unlock()
	spec := d.publishedSpec(target)
	if spec == nil {
		return false
	}
	rec, _ := d.mount.load(target)
	if rec != nil && (rec.PID != pid || ownsTarget(rec)) {
		return false // a publish already replaced it
	}
	spec.restarts++
	// The dead server's mount answers ENOTCONN: take it away first.
	if mounted, _ := mountinfo.IsMounted(target); mounted {
		if err := detach(target); err != nil {
			d.log.Warn("restarting a volume's mount: could not detach the dead one", "target", target, "err", err)
		}
	}
	if rec != nil {
		d.mount.removeCgroup(rec.Cgroup)
	}
	if spec.podToken != "" {
		if err := d.mount.writeToken(target, spec.podToken); err != nil {
			d.metrics.restarts.WithLabelValues("failed").Inc()
			d.log.Warn("restarting a volume's mount failed", "volume_id", spec.volumeID, "target", target, "err", err)
			return true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.MountTimeout+time.Second)
	defer cancel()
	if err := d.mount.start(ctx, spec.volumeID, spec.source, target, spec.args, spec.env, spec.memLimit); err != nil {
		d.metrics.restarts.WithLabelValues("failed").Inc()
		d.log.Warn("restarting a volume's mount failed", "volume_id", spec.volumeID, "target", target, "try", spec.restarts, "err", err)
		return true
	}
	d.metrics.restarts.WithLabelValues("restarted").Inc()
	d.log.Warn("restarted a volume's mount process that died", "volume_id", spec.volumeID, "target", target, "restarts", spec.restarts)
	return false
}
