package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelfs/modelfs/tests/s3server"
)

// Fault names as the report shows them: the server's kinds, with latency
// spikes split by whether they outlast --request-timeout.
const (
	faultShortSpike = "latency<timeout"
	faultLongSpike  = "latency>timeout"
)

// faultNames lists every fault the injector draws from, in report order.
func faultNames() []string {
	return []string{
		string(s3server.FaultInternalError), string(s3server.FaultSlowDown), string(s3server.FaultReset),
		string(s3server.FaultTruncated), string(s3server.FaultStall), faultShortSpike, faultLongSpike,
	}
}

// injector fails a share of the object GETs the S3 server receives. It is
// the server's Hook.
type injector struct {
	srv     *s3server.Server
	rate    float64
	timeout time.Duration // the mounts' --request-timeout

	mu      sync.Mutex
	rng     *rand.Rand
	counts  map[string]int64 // faults by name
	seen    int64            // object GET tries
	active  int              // faults being served now
	stopped bool             // no new faults
	idle    chan struct{}    // closed when stopped and active drops to 0
}

func newInjector(srv *s3server.Server, rate float64, timeout time.Duration, seed uint64) *injector {
	return &injector{
		srv: srv, rate: rate, timeout: timeout,
		rng: rand.New(rand.NewPCG(seed, 0xfa017)), counts: map[string]int64{},
	}
}

func (in *injector) hook(w http.ResponseWriter, r *http.Request) bool {
	_, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if r.Method != http.MethodGet || key == "" {
		return false // listings and HEADs are not faulted: mounts start before faults do
	}
	in.mu.Lock()
	in.seen++
	if in.stopped || in.rng.Float64() >= in.rate {
		in.mu.Unlock()
		return false
	}
	name, f := in.pick()
	in.counts[name]++
	in.active++
	in.mu.Unlock()
	defer in.done()
	in.srv.ServeFault(w, r, f)
	return true
}

// pick draws a fault, kinds in equal shares. Called with mu held.
func (in *injector) pick() (string, s3server.Fault) {
	kinds := s3server.FaultKinds()
	f := s3server.Fault{Kind: kinds[in.rng.IntN(len(kinds))]}
	switch f.Kind {
	case s3server.FaultSlowDown:
		f.RetryAfter = 1
	case s3server.FaultLatency:
		if in.rng.IntN(2) == 0 {
			// Far above a loopback GET, well within the timeout: slow, not failed.
			f.Delay = in.timeout/10 + time.Duration(in.rng.Int64N(int64(in.timeout*4/10)+1))
			return faultShortSpike, f
		}
		// Held until the client gives up on the try.
		f.Delay = 10 * in.timeout
		return faultLongSpike, f
	}
	return string(f.Kind), f
}

func (in *injector) done() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.active--
	if in.active == 0 && in.idle != nil {
		close(in.idle)
		in.idle = nil
	}
}

// stop injects no more faults and waits for those under way to end, so
// that the tries they failed are over (and retried) before the mounts'
// counters are read.
func (in *injector) stop(ctx context.Context) error {
	in.mu.Lock()
	in.stopped = true
	idle := make(chan struct{})
	if in.active == 0 {
		close(idle)
	} else {
		in.idle = idle
	}
	in.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("injected faults still being served: %w", ctx.Err())
	}
}

// faultCounts are the injector's counts at one moment.
type faultCounts struct {
	byKind map[string]int64
	seen   int64 // object GET tries
}

// snapshot returns the counts so far.
func (in *injector) snapshot() faultCounts {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := faultCounts{byKind: make(map[string]int64, len(in.counts)), seen: in.seen}
	for k, v := range in.counts {
		out.byKind[k] = v
	}
	return out
}

// failsTry reports whether a fault makes the try fail, so that the client
// must retry it: all but the spikes shorter than the timeout.
func failsTry(name string) bool { return name != faultShortSpike }
