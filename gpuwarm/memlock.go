package gpuwarm

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrMemlock is wrapped by the error of a pin that RLIMIT_MEMLOCK forbids.
var ErrMemlock = errors.New("RLIMIT_MEMLOCK too low")

// memlockEnv is how the memlock check reads and changes the process's
// limit; tests inject numbers.
type memlockEnv struct {
	get        func() (cur, max uint64, err error)
	set        func(cur, max uint64) error
	capIPCLock func() bool
}

func systemMemlock() memlockEnv {
	return memlockEnv{
		get: func() (uint64, uint64, error) {
			var rl unix.Rlimit
			err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl)
			return rl.Cur, rl.Max, err
		},
		set: func(cur, max uint64) error {
			return unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: cur, Max: max})
		},
		capIPCLock: hasCapIPCLock,
	}
}

// ensureMemlock makes sure the process may lock need bytes: CAP_IPC_LOCK
// lifts the limit; otherwise the soft limit is raised to the hard one when
// it is too low. It returns how the limit was satisfied, or an error
// wrapping ErrMemlock that says how to raise it.
func ensureMemlock(need int64, env memlockEnv) (string, error) {
	if need <= 0 {
		return "nothing to lock", nil
	}
	if env.capIPCLock != nil && env.capIPCLock() {
		return "CAP_IPC_LOCK: no limit applies", nil
	}
	cur, max, err := env.get()
	if err != nil {
		return "", fmt.Errorf("reading RLIMIT_MEMLOCK: %w", err)
	}
	fits := func(limit uint64) bool { return limit == unix.RLIM_INFINITY || uint64(need) <= limit }
	if fits(cur) {
		return "within RLIMIT_MEMLOCK " + limitString(cur), nil
	}
	if max != cur && fits(max) {
		if err := env.set(max, max); err == nil {
			return fmt.Sprintf("RLIMIT_MEMLOCK soft limit raised from %s to %s", limitString(cur), limitString(max)), nil
		}
	}
	return "", fmt.Errorf("%w: pinning %s needs RLIMIT_MEMLOCK of at least %s, but the limit is %s (hard limit %s). "+
		"Raise it before modelfs starts (`ulimit -l unlimited`, or `ulimit -l %d` in KiB; LimitMEMLOCK=infinity in a systemd unit; "+
		"`docker run --ulimit memlock=-1`), or in Kubernetes add the IPC_LOCK capability to the container "+
		"(securityContext: {capabilities: {add: [IPC_LOCK]}}), or pin less with --pin-bytes",
		ErrMemlock, formatBytes(need), formatBytes(need), limitString(cur), limitString(max), (need+1023)/1024)
}

func limitString(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return formatBytes(int64(v))
}

// hasCapIPCLock reports whether CAP_IPC_LOCK is in the effective set.
func hasCapIPCLock() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_IPC_LOCK) != 0
		}
	}
	return false
}
