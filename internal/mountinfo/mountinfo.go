package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// IsMounted reports whether path is a mount point, from /proc/self/mountinfo.
// It never touches path itself: a FUSE server that stopped answering
// would block even an lstat of its mount point.
func IsMounted(path string) (bool, error) {
	dev, err := MountDevice(path)
	return dev != "", err
}

// MountDevice returns the "major:minor" device of the mount at path, or ""
// if path is not a mount point. For FUSE, the minor number names the
// connection under /sys/fs/fuse/connections.
func MountDevice(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	// Only the parent is resolved: resolving path would stat the mount.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	dev := ""
	for sc.Scan() {
		// Field 3 is the device, field 5 the mount point, octal-escaped.
		// The last entry wins: it is the one on top.
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == abs {
			dev = fields[2]
		}
	}
	return dev, sc.Err()
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Unmount unmounts a modelfs mount that may belong to another process or
// to none (a stale mount left by a crash: "transport endpoint is not
// connected"). As root it detaches directly; otherwise it asks fusermount3.
func Unmount(mountpoint string) error {
	mounted, err := IsMounted(mountpoint)
	if err != nil {
		return err
	}
	if !mounted {
		return fmt.Errorf("%s is not mounted", mountpoint)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting %s: %w", mountpoint, err)
		}
		return nil
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		out, err := exec.Command(path, "-u", "-z", mountpoint).CombinedOutput()
		if err != nil {
			return fmt.Errorf("unmounting %s: %s: %w", mountpoint, strings.TrimSpace(string(out)), err)
		}
		return nil
	}
	return fmt.Errorf("unmounting %s: not root and no fusermount3 found", mountpoint)
}
