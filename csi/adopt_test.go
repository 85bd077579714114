package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelfs/modelfs/internal/mountinfo"
)

// wedgedMount mounts a FUSE filesystem at target whose server never
// answers: the test holds /dev/fuse open and never reads it, so every
// request on the mount, the kernel's INIT first, waits for good. Closing
// the device at cleanup aborts the connection and frees what waits.
func wedgedMount(t *testing.T, target string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE directly needs root")
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := syscall.Mount("wedged", target, "fuse.wedged", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_RDONLY, opts); err != nil {
		syscall.Close(fd)
		t.Skipf("mounting fuse: %v", err)
	}
	t.Cleanup(func() {
		syscall.Close(fd)
		if mounted, _ := mountinfo.IsMounted(target); mounted {
			syscall.Unmount(target, syscall.MNT_DETACH)
		}
	})
}

// fakeOwner runs a process that ownsTarget takes for target's mount
// process, and returns a channel closed with its exit.
func fakeOwner(t *testing.T, target string) (*exec.Cmd, <-chan error) {
	t.Helper()
	// The shell waits on a pipe that stays open; its last argument is
	// the target, as a mount process's is.
	cmd := exec.Command("/bin/sh", "-c", "read x", "sh", target)
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		done <- cmd.Wait()
		close(finished)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-finished
	})
	return cmd, done
}

func TestProbeWedged(t *testing.T) {
	target := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if s, err := probe(target, time.Second); s != notMounted || err != nil {
		t.Fatalf("probe of a plain dir = %v, %v", s, err)
	}
	wedgedMount(t, target)
	start := time.Now()
	if s, err := probe(target, 200*time.Millisecond); s != wedged || err != nil {
		t.Fatalf("probe = %v, %v; want wedged", s, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("probe took %s", d)
	}
}

// TestAdoptWedged: a plugin starting next to a mount whose server does
// not answer starts anyway, stops that mount's process, detaches the mount
// and forgets the volume; a stale record beside it is cleaned as before.
func TestAdoptWedged(t *testing.T) {
	dir := t.TempDir()
	m, err := newMounter("/bin/false", filepath.Join(dir, "state"), time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "wedged")
	stale := filepath.Join(dir, "stale")
	for _, d := range []string{target, stale} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	wedgedMount(t, target)
	owner, exited := fakeOwner(t, target)
	for _, r := range []*record{
		{VolumeID: "v-wedged", Target: target, PID: owner.Process.Pid},
		{VolumeID: "v-stale", Target: stale, PID: 0},
	} {
		if err := m.save(r); err != nil {
			t.Fatal(err)
		}
	}

	adopted := make(chan adoption, 1)
	go func() { adopted <- m.adopt(300 * time.Millisecond) }()
	var res adoption
	select {
	case res = <-adopted:
	case <-time.After(30 * time.Second):
		t.Fatal("adopt hangs on a wedged mount")
	}
	if res != (adoption{Wedged: 1, Cleaned: 1}) {
		t.Fatalf("adoption %+v; want one wedged and one stale", res)
	}
	if mounted, _ := mountinfo.IsMounted(target); mounted {
		t.Fatal("the wedged mount is still attached")
	}
	for _, tg := range []string{target, stale} {
		if r, err := m.load(tg); r != nil || err != nil {
			t.Fatalf("record of %s kept: %+v, %v", tg, r, err)
		}
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("mount process ended with %v; want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wedged mount's process was left running")
	}
}

func TestPodUID(t *testing.T) {
	for target, want := range map[string]string{
		"/var/lib/kubelet/pods/0b5c-11/volumes/kubernetes.io~csi/model/mount": "0b5c-11",
		"/var/snap/microk8s/common/var/lib/kubelet/pods/u2/volumes/x/y/mount": "u2",
		"/mnt/elsewhere": "",
	} {
		if got := podUID(target); got != want {
			t.Errorf("podUID(%q) = %q, want %q", target, got, want)
		}
	}
}

// TestPublishOverWedged: publishing a target again whose mount does not
// answer detaches that mount and mounts afresh instead of hanging on it.
func TestPublishOverWedged(t *testing.T) {
	dir := t.TempDir()
	// /bin/false as the mount binary: the fresh mount fails at once, which
	// is enough to see the publish get past the wedged one.
	d, err := New(Options{NodeID: "n", Bin: "/bin/false", StateDir: filepath.Join(dir, "state"), MemoryHeadroom: -1, ProbeTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	wedgedMount(t, target)
	owner, exited := fakeOwner(t, target)
	if err := d.mount.save(&record{VolumeID: "v1", Target: target, PID: owner.Process.Pid}); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		_, err := d.NodePublishVolume(context.Background(), &csipb.NodePublishVolumeRequest{
			VolumeId: "v1", TargetPath: target,
			VolumeCapability: &csipb.VolumeCapability{
				AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
				AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
			},
			VolumeContext: map[string]string{"source": "s3://bucket/model", "noSignRequest": "true"},
		})
		published <- err
	}()
	select {
	case err := <-published:
		if status.Code(err) != codes.Internal {
			t.Fatalf("publish = %v; want the fresh mount's failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("publish hangs on a wedged mount")
	}
	if mounted, _ := mountinfo.IsMounted(target); mounted {
		t.Fatal("the wedged mount is still attached")
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the wedged mount's process was left running")
	}
}

func TestMetricsSocketPath(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if _, err := New(Options{NodeID: "n", Bin: "/bin/false", StateDir: long, MemoryHeadroom: -1, Metrics: true}); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("New with a %d-byte state dir and metrics: %v; want a refusal", len(long), err)
	}
}
