package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/modelfs/modelfs/tests/s3server"
)

// firstTryFaults injects faults into the first try of chosen ranged GETs
// and counts every try per range, so a test knows exactly which tries
// failed and can check each was repeated, and only those.
type firstTryFaults struct {
	srv *s3server.Server
	// choose decides the fault for the n-th distinct range (from 0).
	choose func(n int) (s3server.Fault, bool)
	// injected, if set, is told of each fault as it is injected.
	injected func(path, rng string)

	mu      sync.Mutex
	tries   map[string]int // by object path and Range header
	faulted map[string]s3server.Fault
}

func newFirstTryFaults(srv *s3server.Server, choose func(n int) (s3server.Fault, bool)) *firstTryFaults {
	return &firstTryFaults{srv: srv, choose: choose, tries: map[string]int{}, faulted: map[string]s3server.Fault{}}
}

func (f *firstTryFaults) hook(w http.ResponseWriter, r *http.Request) bool {
	rng := r.Header.Get("Range")
	if r.Method != http.MethodGet || rng == "" {
		return false // listings and HEADs go through
	}
	id := r.URL.Path + " " + rng
	f.mu.Lock()
	first := f.tries[id] == 0
	f.tries[id]++
	var fault s3server.Fault
	inject := false
	if first {
		if fault, inject = f.choose(len(f.tries) - 1); inject {
			f.faulted[id] = fault
		}
	}
	f.mu.Unlock()
	if !inject {
		return false
	}
	if f.injected != nil {
		f.injected(r.URL.Path, rng)
	}
	f.srv.ServeFault(w, r, fault)
	return true
}

// check reports every range tried fewer times than its fault calls for:
// twice for a fault that fails the try (so it was retried), once
// otherwise. With exact, where no block is ever fetched twice (the RAM
// cache holds all that is read), more tries are reported too. It returns
// how many faults failed their try.
func (f *firstTryFaults) check(t *testing.T, fails func(s3server.Fault) bool, exact bool) (failing int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, n := range f.tries {
		want := 1
		if fault, ok := f.faulted[id]; ok && fails(fault) {
			want = 2
		}
		if n < want || (exact && n != want) {
			t.Errorf("%s: %d tries, want %d (fault: %+v)", id, n, want, f.faulted[id])
		}
		if want == 2 {
			failing++
		}
	}
	return failing
}

func (f *firstTryFaults) byKind() map[s3server.FaultKind]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := map[s3server.FaultKind]int{}
	for _, fault := range f.faulted {
		n[fault.Kind]++
	}
	return n
}

// metricsURL is the /metrics URL a mount started with --metrics-addr
// 127.0.0.1:0 logged.
func metricsURL(t *testing.T, m *mount) string {
	t.Helper()
	for _, line := range strings.Split(m.Log(), "\n") {
		if !strings.Contains(line, "serving metrics") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if a, ok := strings.CutPrefix(f, "addr="); ok {
				return "http://" + a + "/metrics"
			}
		}
	}
	t.Fatalf("no log line with the metrics address:\n%s", m.Log())
	return ""
}

// slowerThan counts the observations of a histogram above secs, which
// must be one of its bucket bounds.
func slowerThan(t *testing.T, mf map[string]*dto.MetricFamily, name string, secs float64) uint64 {
	t.Helper()
	f := mf[name]
	if f == nil || len(f.GetMetric()) == 0 {
		t.Fatalf("no histogram %s", name)
	}
	var n uint64
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		found := false
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == secs {
				n += h.GetSampleCount() - b.GetCumulativeCount()
				found = true
			}
		}
		if !found {
			t.Fatalf("%s has no bucket bound %v", name, secs)
		}
	}
	return n
}

// mountAlive fails the test if the mount process has exited.
func mountAlive(t *testing.T, m *mount) {
	t.Helper()
	select {
	case <-m.Exited():
		t.Fatalf("the mount exited: %v\n%s", m.Err(), m.Log())
	default:
	}
}

// noFailures checks that no request, block load or read failed. Failed
// reads are counted from the log: modelfs_fuse_read_errors_total also
// counts reads the kernel interrupted (EINTR), which the reader retries.
func noFailures(t *testing.T, m *mount, mf map[string]*dto.MetricFamily) {
	t.Helper()
	for _, name := range []string{"modelfs_fetch_errors_total", "modelfs_cache_load_errors_total"} {
		if n := sum(mf, name, nil); n > 0 { // absent (-1) until the first error
			t.Errorf("%s = %v, want 0", name, n)
		}
	}
	if n := strings.Count(m.Log(), `msg="read failed"`); n > 0 {
		t.Errorf("%d reads failed:\n%s", n, m.Log())
	}
}

// A share of GETs is slow: some by a spike the request timeout allows,
// some past it. Reads return the right bytes; exactly the tries that ran
// past the timeout are retried, the merely slow ones are not, and the
// mount is healthy afterwards.
func TestLatencySpikes(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	const (
		// A GET with no spike took over a second once, beside the whole
		// suite under the race detector: 2 s keeps such a GET within it.
		timeout = 2 * time.Second
		short   = 400 * time.Millisecond // far above a loopback GET, well below the timeout
	)
	spikes := newFirstTryFaults(r.srv, func(n int) (s3server.Fault, bool) {
		switch n % 4 {
		case 1:
			// Held until the client gives up, so exactly one timeout.
			return s3server.Fault{Kind: s3server.FaultLatency, Delay: 30 * timeout}, true
		case 3:
			return s3server.Fault{Kind: s3server.FaultLatency, Delay: short}, true
		}
		return s3server.Fault{}, false
	})
	r.srv.SetHook(spikes.hook)
	defer r.srv.SetHook(nil)
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--prefetch", "off", "--block-size", "1MiB",
		"--retries", "5", "--request-timeout", timeout.String(), "--metrics-addr", "127.0.0.1:0")...)

	// Four readers, a quarter of the file each, so the spikes overlap and
	// the test takes about as long as a few of them.
	name := biggest(t)
	want := sourceBytes(t, name)
	f, err := os.Open(m.path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	const readers = 4
	quarter := (len(want) + readers - 1) / readers
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := i * quarter; off < min((i+1)*quarter, len(want)); off += 1 << 20 {
				end := min(off+1<<20, (i+1)*quarter, len(want))
				if _, err := f.ReadAt(got[off:end], int64(off)); err != nil {
					t.Errorf("read [%d, %d): %v", off, end, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if hexSum(got) != hexSum(want) {
		t.Fatal("wrong bytes read through latency spikes")
	}

	long := func(f s3server.Fault) bool { return f.Delay > timeout }
	// Every try past the timeout was repeated; that only those were is
	// the retry counter's check below. Tries per range are not exact: the
	// RAM tier reuses the buffer of a block whose every page was served
	// first, and with these four readers the kernel asks for a few such
	// blocks again, which are then fetched again (1–2 of 17 ranges in
	// about one run in ten; why the kernel asks again is not known).
	retried := spikes.check(t, long, false)
	slow := spikes.byKind()[s3server.FaultLatency]
	t.Logf("%d GETs spiked: %d past the %v timeout, %d by %v", slow, retried, timeout, slow-retried, short)
	if retried == 0 || slow-retried == 0 {
		t.Fatalf("%d spikes past the timeout and %d below it, want some of each", retried, slow-retried)
	}
	mf := scrape(t, metricsURL(t, m))
	if n := sum(mf, "modelfs_fetch_retries_total", map[string]string{"op": "get"}); n != float64(retried) {
		t.Errorf("modelfs_fetch_retries_total{op=get} = %v, want the %d tries that ran past the timeout", n, retried)
	}
	// The histogram times whole requests: a long spike costs the timeout
	// and a backoff (at least 100 ms), a short one the spike.
	if n := slowerThan(t, mf, "modelfs_fetch_get_duration_seconds", 0.256); n < uint64(slow) {
		t.Errorf("%d GETs took over 256ms, want at least the %d spiked", n, slow)
	}
	if n := slowerThan(t, mf, "modelfs_fetch_get_duration_seconds", 1.024); n < uint64(retried) {
		t.Errorf("%d GETs took over 1.024s, want at least the %d that timed out", n, retried)
	}

	// Healthy afterwards: every file reads back right, no read failed.
	r.srv.SetHook(nil)
	readModel(t, m)
	mountAlive(t, m)
	noFailures(t, m, scrape(t, metricsURL(t, m)))
}

// Every kind of fault, injected while the plan prefetcher runs ahead of an
// mmap load: the prefetcher's tries fail and are retried like a reader's,
// and every byte that arrives is right.
func TestFaultsUnderPlanPrefetch(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	const timeout = 500 * time.Millisecond
	kinds := []s3server.Fault{
		{Kind: s3server.FaultInternalError},
		{Kind: s3server.FaultSlowDown, RetryAfter: 1},
		{Kind: s3server.FaultReset},
		{Kind: s3server.FaultTruncated},
		{Kind: s3server.FaultStall},
		{Kind: s3server.FaultLatency, Delay: 30 * timeout},
		{Kind: s3server.FaultLatency, Delay: timeout / 4},
	}
	faults := newFirstTryFaults(r.srv, func(n int) (s3server.Fault, bool) {
		if n%4 != 0 {
			return s3server.Fault{}, false
		}
		return kinds[n/4%len(kinds)], true
	})
	type injection struct {
		path  string
		start int64
	}
	injected := make(chan injection, 1024)
	faults.injected = func(path, rng string) {
		var start, end int64
		fmt.Sscanf(rng, "bytes=%d-%d", &start, &end)
		select {
		case injected <- injection{path, start}:
		default: // only the first ones matter
		}
	}
	r.srv.SetHook(faults.hook)
	defer r.srv.SetHook(nil)
	// A RAM cache of a third of the model: the plan window (half of it)
	// keeps the prefetcher running ahead of the load, not done before it.
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--prefetch", "layer", "--block-size", "1MiB", "--mem-cache", "16MiB",
		"--retries", "5", "--request-timeout", timeout.String(), "--metrics-addr", "127.0.0.1:0")...)
	// The plan is made from the headers, read (and faulted) first.
	waitForCondition(t, "the prefetch plan", func() bool { return strings.Contains(m.Log(), "prefetch plan") })
	for len(injected) > 0 {
		<-injected
	}

	// One read deep in each of two shards, too far from their starts for
	// readahead to call them sequential, makes the load whole-model and
	// starts the plan prefetcher across the shards (one read alone costs
	// about its tensor). A fault outside the reads' blocks (and the next
	// ones, for the kernel's readahead) hit it.
	type read struct {
		name string
		off  int64
	}
	var reads []read
	for range 2 {
		var except string
		if len(reads) > 0 {
			except = reads[0].name
		}
		name, off := tensorPast(t, 8<<20, except)
		f, err := os.Open(m.path(name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, 4096)
		if _, err := f.ReadAt(p, off); err != nil || hexSum(p) != hexSum(sourceBytes(t, name)[off:off+4096]) {
			t.Fatalf("read of %s at %d: %v, or wrong bytes", name, off, err)
		}
		reads = append(reads, read{name, off})
	}
	giveUp := time.After(30 * time.Second)
	for prefetchFaulted := false; !prefetchFaulted; {
		select {
		case in := <-injected:
			prefetchFaulted = true
			for _, r := range reads {
				if strings.HasSuffix(in.path, "/"+r.name) && in.start>>20 >= r.off>>20 && in.start>>20 <= r.off>>20+1 {
					prefetchFaulted = false
				}
			}
			if prefetchFaulted {
				t.Logf("read %v; a prefetch of %s at %d was faulted", reads, in.path, in.start)
			}
		case <-giveUp:
			t.Fatalf("no fault hit the plan prefetcher in 30s\n%s", m.Log())
		}
	}

	out, err := exec.Command(mmapBin, "-quiet", "-order", "header", m.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mmapread: %v\n%s", err, out)
	}
	if want := shardSums(t); string(out) != want {
		t.Fatalf("mmapread through faults:\n%s\nwant (sha256 of the sources):\n%s", out, want)
	}
	readModel(t, m)
	r.srv.SetHook(nil)

	fails := func(f s3server.Fault) bool { return f.Kind != s3server.FaultLatency || f.Delay > timeout }
	failing := faults.check(t, fails, false)
	byKind := faults.byKind()
	t.Logf("faults injected: %v (%d failed their try)", byKind, failing)
	for _, k := range s3server.FaultKinds() {
		if byKind[k] == 0 {
			t.Errorf("no %s fault was injected", k)
		}
	}
	mountAlive(t, m)
	mf := scrape(t, metricsURL(t, m))
	if n := sum(mf, "modelfs_fetch_retries_total", map[string]string{"op": "get"}); n != float64(failing) {
		t.Errorf("modelfs_fetch_retries_total{op=get} = %v, want the %d failed tries", n, failing)
	}
	if n := sum(mf, "modelfs_cache_prefetches_total", nil); n <= 0 {
		t.Errorf("modelfs_cache_prefetches_total = %v: the plan prefetcher fetched nothing", n)
	}
	noFailures(t, m, mf)
}

// tensorPast returns a shard other than except and the offset of a
// tensor that starts at least atLeast bytes into it.
func tensorPast(t *testing.T, atLeast int64, except string) (string, int64) {
	t.Helper()
	for _, ts := range model.Tensors {
		if ts.Begin >= atLeast && ts.File != except {
			return ts.File, ts.Begin
		}
	}
	t.Fatalf("no tensor starts %d bytes into its shard", atLeast)
	return "", 0
}

// shardSums is sha256sum's output for the model's safetensors files, which
// is what mmapread -quiet prints for a correct mount.
func shardSums(t *testing.T) string {
	t.Helper()
	var names []string
	for _, f := range model.Files {
		if filepath.Ext(f) == ".safetensors" {
			names = append(names, f)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s  %s\n", hexSum(sourceBytes(t, n)), n)
	}
	return b.String()
}
