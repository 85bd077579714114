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
