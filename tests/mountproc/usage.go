package mountproc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of utime and stime in /proc/PID/stat; the Linux ABI
// fixes it at 100 whatever the kernel's internal tick.
const userHZ = 100

// CPUSeconds is the user+system CPU time pid has used so far, all threads
// together, from /proc/PID/stat (10 ms resolution).
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of %d: %w", pid, err)
	}
	// The command name may hold spaces and parentheses: the fields resume
	// after the last ')'. utime and stime are fields 14 and 15 of the line.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, b)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, b)
	}
	return float64(ut+st) / userHZ, nil
}

// Memory is pid's resident set size now (VmRSS) and its peak since it
// exec'd (VmHWM), in bytes, from /proc/PID/status.
//
// The peak is read there rather than from the rusage of the exited child:
// Go starts children with clone(CLONE_VM|CLONE_VFORK), so a child's
// maxrss is seeded at exec with its parent's peak, which for a test or a
// benchmark holding large buffers hides any smaller mount.
func Memory(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading the memory use of %d: %w", pid, err)
	}
	if rss, err = statusBytes(b, "VmRSS:"); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	if peak, err = statusBytes(b, "VmHWM:"); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return rss, peak, nil
}

// PeakRSS is pid's VmHWM in bytes (see Memory).
func PeakRSS(pid int) (int64, error) {
	_, peak, err := Memory(pid)
	return peak, err
}

// statusBytes is one "Field:   123 kB" line of /proc/PID/status in bytes.
func statusBytes(status []byte, field string) (int64, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %s %q", field, rest)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s line", field)
}
