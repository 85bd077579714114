package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelfs/modelfs/mount/config"
)

// As an ordinary user, modelfs mounts through fusermount3 and unmounts
// cleanly on SIGTERM. The test runs the binary as nobody, so it needs root
// to switch users and the fuse3 package for fusermount3.
func TestMountAsOrdinaryUser(t *testing.T) {
	needFuse(t)
	if os.Geteuid() != 0 {
		t.Skip("skipping: switching to an unprivileged user needs root")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("skipping: fusermount3 is not installed (apt-get install fuse3)")
	}
	if st, err := os.Stat("/dev/fuse"); err != nil || st.Mode().Perm()&0o006 != 0o006 {
		t.Skip("skipping: /dev/fuse is not readable and writable by other users here (Debian's default is 0666), so fusermount3 cannot open it for them")
	}
	const nobody = 65534
	r := newRemote(t)
	r.uploadModel(t, "")

	// The user needs to reach the binary and own the mountpoint.
	home := filepath.Join(os.TempDir(), "modelfs-user-test")
	os.RemoveAll(home)
	if err := os.MkdirAll(filepath.Join(home, "mnt"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	bin := filepath.Join(home, "modelfs")
	data, err := os.ReadFile(modelfsBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(home, "mnt")
	if err := os.Chown(mnt, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, append(append([]string{"mount"}, r.mountArgs()...), "s3://"+bucket, mnt)...)
	cmd.Env = append(testEnv(), "HOME="+home)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	stdout, _ := cmd.StdoutPipe()
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), config.ReadyPrefix) {
				ready <- true
			}
		}
		done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("mount as nobody failed: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("mount as nobody not ready\n%s", stderr.String())
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	// Without allow_other only the mounting user may read: read as nobody.
	sum := exec.Command("sha256sum", model.Files...)
	sum.Dir = mnt
	sum.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := sum.Output()
	if err != nil {
		t.Fatalf("sha256sum as nobody: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		got, name, _ := strings.Cut(line, "  ")
		if want := hexSum(sourceBytes(t, name)); got != want {
			t.Errorf("%s differs through a user mount", name)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("user mount did not exit after SIGTERM")
	}
	if mounted(t, mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
}
