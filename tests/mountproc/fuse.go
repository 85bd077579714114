package mountproc

import (
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// FuseUnavailable says why FUSE mounts cannot run here, or "" when they
// can: /dev/fuse must open read-write, and an ordinary user also needs
// fusermount3 (Debian's fuse3 package) to mount.
func FuseUnavailable() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("/dev/fuse is not usable: %v", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return "not root and fusermount3 is not installed (apt-get install fuse3)"
		}
	}
	return ""
}

// Skipper is the part of testing.TB that SkipWithoutFuse uses; programs
// that are not tests use FuseUnavailable.
type Skipper interface {
	Helper()
	Skip(args ...any)
}

// SkipWithoutFuse skips the test, printing why, when FUSE mounts cannot
// run here.
func SkipWithoutFuse(t Skipper) {
	t.Helper()
	if reason := FuseUnavailable(); reason != "" {
		t.Skip("skipping: " + reason)
	}
}

// PassthroughUnavailable says why this kernel or process cannot use FUSE
// passthrough (Linux 6.9+, CAP_SYS_ADMIN), or "" when it can.
func PassthroughUnavailable() string {
	if reason := FuseUnavailable(); reason != "" {
		return reason
	}
	if os.Geteuid() != 0 {
		return "FUSE passthrough needs root"
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Sprintf("uname: %v", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	fmt.Sscanf(rel, "%d.%d", &major, &minor)
	if major < 6 || major == 6 && minor < 9 {
		return fmt.Sprintf("kernel %s has no FUSE passthrough (needs 6.9+)", rel)
	}
	return ""
}

// SkipWithoutPassthrough skips the test, printing why, when FUSE
// passthrough cannot run here.
func SkipWithoutPassthrough(t Skipper) {
	t.Helper()
	if reason := PassthroughUnavailable(); reason != "" {
		t.Skip("skipping: " + reason)
	}
}
