package mountproc

import (
	"fmt"
	"os"
	"os/exec"
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
