package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// machineInfo is printed above the table and stored with the results:
// numbers from different machines are not comparable.
type machineInfo struct {
	Cores    int    `json:"cores"`
	MemBytes int64  `json:"mem_bytes"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	CPU      string `json:"cpu"`
	Modelfs  string `json:"modelfs"`
	Hostname string `json:"hostname"`
}

func probeMachine(modelfsBin string) machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown"}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		m.CPU = procField(f, "model name")
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		kb, _ := strconv.ParseInt(strings.TrimSuffix(procField(f, "MemTotal"), " kB"), 10, 64)
		m.MemBytes = kb << 10
		f.Close()
	}
	if out, err := exec.Command(modelfsBin, "--version").Output(); err == nil {
		m.Modelfs = strings.TrimSpace(string(out))
	}
	return m
}

// procField returns the value of the first "key : value" line of a /proc
// file.
func procField(r io.Reader, key string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m machineInfo) String() string {
	return fmt.Sprintf("machine: %d cores, %.1f GiB RAM, Linux %s, %s, %s\nmodelfs: %s",
		m.Cores, float64(m.MemBytes)/(1<<30), m.Kernel, m.Go, m.CPU, m.Modelfs)
}

// userHZ is the unit of utime/stime in /proc/PID/stat; it is fixed at 100
// in the Linux ABI whatever the kernel's internal tick.
const userHZ = 100

// procCPU returns the user+system CPU seconds pid has used so far, all
// threads together, from /proc/PID/stat (10 ms resolution).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of %d: %w", pid, err)
	}
	// The command name may hold spaces and parentheses; fields resume after
	// the last ')'. utime and stime are fields 14 and 15 of the line.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, b)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, b)
	}
	return float64(ut+st) / userHZ, nil
}

// procHWM returns pid's peak resident set size in bytes (VmHWM in
// /proc/PID/status): the high-water mark of its own address space since
// it exec'd. The rusage Maxrss of a child is not that: Go starts children
// with clone(CLONE_VM|CLONE_VFORK), so at exec the child's maxrss is
// seeded with the parent's peak RSS, which for the bench (hundreds of MiB
// of buffers and mappings) hides any smaller mount.
func procHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	v := procField(f, "VmHWM")
	kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing VmHWM of %d: %q", pid, v)
	}
	return kb << 10, nil
}

// selfCPU returns this process's user+system CPU seconds (all threads).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}

func tvSeconds(tv syscall.Timeval) float64 {
	return time.Duration(tv.Nano()).Seconds()
}
