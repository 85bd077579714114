package e2e

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	promodel "github.com/prometheus/common/model"

	"github.com/modelfs/modelfs/tests/promtest"
)

// A mount with --metrics-addr 127.0.0.1:0 logs the address it bound (here
// as a JSON log line, which also checks --log-format json), and its
// /metrics account for a file read through the mount.
func TestMetricsAndJSONLogs(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	// A global flag goes before the command; the environment twin is
	// simpler to hand through startMount.
	t.Setenv("MODELFS_LOG_FORMAT", "json")
	// Prefetch off, so that the read below misses the cache for sure.
	m := startMount(t, "s3://"+bucket+"/llama",
		append(r.mountArgs(), "--metrics-addr", "127.0.0.1:0", "--prefetch", "off")...)

	addr := ""
	sc := bufio.NewScanner(strings.NewReader(m.Log()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		if _, ok := line["level"]; !ok {
			t.Errorf("JSON log line without a level: %q", sc.Text())
		}
		if line["msg"] == "serving metrics" {
			addr, _ = line["addr"].(string)
		}
	}
	if addr == "" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("no JSON log line with the bound metrics address:\n%s", m.Log())
	}

	name := biggest(t)
	data, err := os.ReadFile(m.path(name))
	if err != nil {
		t.Fatal(err)
	}

	mf := scrape(t, "http://"+addr+"/metrics")
	for _, name := range []string{"modelfs_fetch_requests_total", "modelfs_fetch_bytes_total", "modelfs_cache_misses_total", "modelfs_cache_loads_total"} {
		if v := sum(mf, name, map[string]string{}); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	if v := sum(mf, "modelfs_fetch_requests_total", map[string]string{"source": "s3", "op": "get"}); v <= 0 {
		t.Errorf(`modelfs_fetch_requests_total{source="s3",op="get"} = %v, want > 0`, v)
	}
	if v := sum(mf, "modelfs_fetch_bytes_total", map[string]string{"op": "get"}); v < float64(len(data)) {
		t.Errorf("modelfs_fetch_bytes_total{op=get} = %v, want at least the %d bytes read", v, len(data))
	}
	if v := sum(mf, "modelfs_fuse_read_bytes_total", nil); v != float64(len(data)) {
		t.Errorf("modelfs_fuse_read_bytes_total = %v, want the %d bytes read", v, len(data))
	}
	if h := mf["modelfs_fetch_get_duration_seconds"]; h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
		t.Errorf("no GET latency observed")
	}
	for _, op := range []string{"lookup", "open", "read"} {
		if n := histCount(mf, "modelfs_fuse_op_duration_seconds", map[string]string{"op": op}); n == 0 {
			t.Errorf("no FUSE %s latency observed", op)
		}
	}
	if n := histCount(mf, "modelfs_file_first_byte_seconds", nil); n != 1 {
		t.Errorf("first byte observed for %d files, want the 1 read", n)
	}
	// Prefetch is off: nothing prefetched, so nothing of it used.
	if v := sum(mf, "modelfs_cache_prefetch_used_bytes_total", nil); v != 0 {
		t.Errorf("modelfs_cache_prefetch_used_bytes_total = %v with prefetch off, want 0", v)
	}
	for n := range mf {
		if !strings.HasPrefix(n, "modelfs_") && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") && !strings.HasPrefix(n, "promhttp_") {
			t.Errorf("metric %s lacks the modelfs_ prefix", n)
		}
	}
	body := scrapeText(t, "http://"+addr+"/metrics")
	if strings.Contains(body, secretKey) || strings.Contains(body, accessKey) || strings.Contains(body, r.srv.URL()) {
		t.Error("/metrics shows credentials or the endpoint")
	}
	if resp, err := http.Get("http://" + addr + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("/debug/pprof/ served without --pprof")
		}
	}
}

func scrapeText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(promodel.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(scrapeText(t, url)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mf
}

// sum adds the counter or gauge values of a family whose labels include
// want; -1 if the family is absent.
func sum(mf map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	if mf[name] == nil {
		return -1
	}
	var total float64
	for _, m := range promtest.Series(mf, name, want) {
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return total
}

// histCount is the sample count of the histograms of a family whose
// labels include want; 0 if there are none.
func histCount(mf map[string]*dto.MetricFamily, name string, want map[string]string) uint64 {
	var n uint64
	for _, m := range promtest.Series(mf, name, want) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// metricsAddr is the address a mount's text logs say it serves metrics on.
func metricsAddr(t *testing.T, m *mount) string {
	t.Helper()
	for _, line := range strings.Split(m.Log(), "\n") {
		if strings.Contains(line, "serving metrics") {
			for _, f := range strings.Fields(line) {
				if a, ok := strings.CutPrefix(f, "addr="); ok {
					return a
				}
			}
		}
	}
	t.Fatalf("no log line with the metrics address:\n%s", m.Log())
	return ""
}

// A load with prefetch on uses what prefetch brought in, and the metrics
// say so; every file read reports its time to first byte once.
func TestMetricsPrefetchUsedAndFirstBytes(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--metrics-addr", "127.0.0.1:0", "--block-size", "1MiB")...)
	addr := metricsAddr(t, m)
	waitForCondition(t, "the prefetch plan", func() bool { return strings.Contains(m.Log(), "prefetch plan") })
	before := scrape(t, "http://"+addr+"/metrics")
	readModel(t, m)
	mf := scrape(t, "http://"+addr+"/metrics")

	issued, used := sum(mf, "modelfs_cache_prefetch_bytes_total", nil), sum(mf, "modelfs_cache_prefetch_used_bytes_total", nil)
	if used <= sum(before, "modelfs_cache_prefetch_used_bytes_total", nil) || used > issued {
		t.Errorf("prefetch: %v bytes issued, %v used (before the read: %v); want more used after the read, at most what was issued",
			issued, used, sum(before, "modelfs_cache_prefetch_used_bytes_total", nil))
	}
	if n := histCount(mf, "modelfs_file_first_byte_seconds", nil); n != uint64(len(model.Files)) {
		t.Errorf("first byte observed for %d files, want the %d read", n, len(model.Files))
	}
	if n, was := histCount(mf, "modelfs_fuse_op_duration_seconds", map[string]string{"op": "read"}),
		histCount(before, "modelfs_fuse_op_duration_seconds", map[string]string{"op": "read"}); n <= was {
		t.Errorf("FUSE read latencies: %d observed after the read, %d before", n, was)
	}
}

// Bad metrics and log flags fail in one line before anything is mounted.
func TestMetricsAndLogFlagErrors(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	src := "s3://" + bucket + "/llama"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(append([]string{"mount"}, r.mountArgs()...), "--metrics-addr", taken.Addr().String(), src, t.TempDir()), "--metrics-addr"},
		{append(append([]string{"mount"}, r.mountArgs()...), "--metrics-addr", "not an address", src, t.TempDir()), "--metrics-addr"},
		{append(append([]string{"mount"}, r.mountArgs()...), "--pprof", src, t.TempDir()), "--pprof needs --metrics-addr"},
		{[]string{"--log-format", "xml", "unmount", t.TempDir()}, `--log-format "xml"`},
	} {
		code, stderr := runCLI(t, testEnv(), tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("modelfs %v: exit %d, stderr %q; want one line naming %s", tc.args, code, stderr, tc.want)
		}
	}
}

// With --pprof, the profiles are served next to /metrics.
func TestMetricsPprof(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	m := startMount(t, "s3://"+bucket+"/llama", append(r.mountArgs(), "--metrics-addr", "127.0.0.1:0", "--pprof")...)
	addr := ""
	for _, line := range strings.Split(m.Log(), "\n") {
		if strings.Contains(line, "serving metrics") {
			for _, f := range strings.Fields(line) {
				if a, ok := strings.CutPrefix(f, "addr="); ok {
					addr = a
				}
			}
		}
	}
	if addr == "" {
		t.Fatalf("no text log line with the metrics address:\n%s", m.Log())
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/debug/pprof/ = %d with --pprof", resp.StatusCode)
	}
}
