package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/modelfs/modelfs/tests/mountproc"
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
	p, err := mountproc.Start(context.Background(), cmd, mountproc.Options{Mountpoint: mnt, Label: "modelfs mount as nobody"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() }) // a failed test's mount, still up
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
	if _, err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if mounted(t, mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
}
