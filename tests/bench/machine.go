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

	"golang.org/x/sys/unix"
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
	// FreshPages is the CPU seconds per GiB to first touch freshly mapped
	// anonymous memory, in 4 KiB pages and in transparent huge pages
	// (0: not measured). Every byte a cold pass brings in lands in memory
	// someone touches for the first time (the mount's block buffers, the
	// reader's page cache), so this is part of every cold figure, and it
	// differs by an order of magnitude between machines: under a
	// hypervisor that shadows guest page tables each 4 KiB fault traps.
	FreshPages4K  float64 `json:"fresh_pages_4k_cpu_s_per_gib,omitempty"`
	FreshPagesTHP float64 `json:"fresh_pages_thp_cpu_s_per_gib,omitempty"`
	// PageReporting is how this guest hands freed memory back to its
	// host (nil: it does not), which decides whether fresh memory is
	// backed when a pass touches it.
	PageReporting *pageReporting `json:"page_reporting,omitempty"`
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
	m.FreshPages4K, _ = freshTouchCost(false)
	m.FreshPagesTHP, _ = freshTouchCost(true)
	m.PageReporting, _ = readPageReporting(pageReportingDir)
	return m
}

// freshTouchSize is what freshTouchCost maps: large enough to be many huge
// pages, small enough to take well under a second anywhere.
const freshTouchSize = 64 << 20

// freshTouchCost maps fresh anonymous memory, writes one byte per 4 KiB
// page and returns the CPU seconds that took per GiB, on this thread
// alone (the kernel's fault handling runs in it).
func freshTouchCost(huge bool) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf, err := syscall.Mmap(-1, 0, freshTouchSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("mapping %d bytes: %w", freshTouchSize, err)
	}
	defer syscall.Munmap(buf)
	advice := unix.MADV_NOHUGEPAGE
	if huge {
		advice = unix.MADV_HUGEPAGE
	}
	if err := unix.Madvise(buf, advice); err != nil {
		return 0, fmt.Errorf("madvise: %w", err)
	}
	t0, err := threadCPU()
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	t1, err := threadCPU()
	if err != nil {
		return 0, err
	}
	return (t1 - t0) * float64(1<<30) / freshTouchSize, nil
}

// threadCPU is the calling thread's CPU seconds from the scheduler's own
// clock: getrusage counts in ticks on many kernels, and a touch of huge
// pages can end within one tick and read as no time at all.
func threadCPU() (float64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("thread CPU clock: %w", err)
	}
	return time.Duration(ts.Nano()).Seconds(), nil
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
	return fmt.Sprintf("machine: %d cores, %.1f GiB RAM, Linux %s, %s, %s\n"+
		"first touch of fresh memory: %.2f CPU-s/GiB in 4 KiB pages, %.2f in huge pages; freed memory reported to the host: %s\nmodelfs: %s",
		m.Cores, float64(m.MemBytes)/(1<<30), m.Kernel, m.Go, m.CPU, m.FreshPages4K, m.FreshPagesTHP, m.PageReporting, m.Modelfs)
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
