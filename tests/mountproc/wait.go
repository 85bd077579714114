package mountproc

import "time"

// Fataler is the part of testing.TB that WaitFor uses.
type Fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// WaitFor polls cond every 2 ms until it holds, failing the test once
// within has passed. It is for conditions outside the test's reach (a
// file, a mount, a log line of another process) that have nothing to
// wait on; what names the condition in the failure.
func WaitFor(t Fataler, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", within, what)
			return // for a Fataler that does not end the goroutine
		case <-tick.C:
		}
	}
}
