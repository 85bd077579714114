package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/modelfs/modelfs/csi"
)

// chartDir is the Helm chart, from this package's directory.
const chartDir = "../../csi/deploy/helm/modelfs-csi"

// metricNameRE finds the series names in PromQL: modelfs's own and those
// of the Go client's process and runtime collectors, which each volume's
// mount serves too.
var metricNameRE = regexp.MustCompile(`\b(?:modelfs|process|go)_[a-z0-9_]+\b`)

// exportedNames lists the series names a scrape holds, a histogram's or
// summary's by the names PromQL sees (_bucket, _sum, _count).
func exportedNames(mfs map[string]*dto.MetricFamily) map[string]bool {
	names := map[string]bool{}
	for name, mf := range mfs {
		names[name] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM || mf.GetType() == dto.MetricType_SUMMARY {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		}
	}
	return names
}

// TestCSIAlertAndDashboardMetrics checks that every series the chart's
// alerts and dashboard query is one a node plugin really serves: it
// publishes a volume, reads it, makes one read fail at the source, and
// scrapes the plugin. A metric renamed in the code fails here, not in an
// operator's silent dashboard.
func TestCSIAlertAndDashboardMetrics(t *testing.T) {
	r, stateDir := csiRemote(t)
	// Two small files: the store refuses one, and fails the first GET of
	// the other (retried).
	for _, name := range []string{"refused.bin", "retried.bin"} {
		if _, err := r.srv.PutObject(bucket, "llama/"+name, []byte("bytes of "+name)); err != nil {
			t.Fatal(err)
		}
	}
	p := startCSIWith(t, stateDir, func(o *csi.Options) {
		o.Metrics = true
		o.MaxRestarts = -1 // the dead mount below stays dead
	})
	srv := httptest.NewServer(p.driver.MetricsHandler())
	defer srv.Close()
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "pods", "uid-a", "volumes", "kubernetes.io~csi", "model", "mount")
	// In place before the mount, which fetches small files as it starts.
	var retried atomic.Bool
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/retried.bin") && retried.CompareAndSwap(false, true) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`))
			return true
		}
		if req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/refused.bin") {
			return false
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`))
		return true
	})
	defer r.srv.SetHook(nil)
	if err := p.publish(ctx, "vol-a", target, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	defer unpublish(t, p, "vol-a", target)
	checkModel(t, target)
	if _, err := os.ReadFile(filepath.Join(target, "refused.bin")); err == nil {
		t.Fatal("a read the store refused succeeded")
	}
	if b, err := os.ReadFile(filepath.Join(target, "retried.bin")); err != nil || string(b) != "bytes of retried.bin" {
		t.Fatalf("retried read: %q, %v", b, err)
	}

	mfs := scrapeCSI(t, srv.URL)
	exported := exportedNames(mfs)
	vol := map[string]string{"volume": "vol-a", "pod_uid": "uid-a"}
	if up, ok := metricValue(mfs, "modelfs_csi_volume_mount_up", vol); !ok || up != 1 {
		t.Errorf("modelfs_csi_volume_mount_up = %v (%v) for a live mount, want 1", up, ok)
	}
	used := map[string][]string{}
	rules, err := os.ReadFile(filepath.Join(chartDir, "templates", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range metricNameRE.FindAllString(string(rules), -1) {
		used[n] = append(used[n], "alerts")
	}
	dash, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range metricNameRE.FindAllString(string(dash), -1) {
		used[n] = append(used[n], "dashboard")
	}
	if len(used) < 10 {
		t.Fatalf("only %d series names found in the alerts and dashboard: %v", len(used), used)
	}
	var missing []string
	for name, where := range used {
		if !exported[name] {
			missing = append(missing, name+" ("+strings.Join(slices.Compact(where), ", ")+")")
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("the chart queries series the plugin does not serve: %s", strings.Join(missing, "; "))
	}
	// What ModelfsVolumeMountDown watches: the mount process dies and the
	// plugin says so, while the volume's own series are gone with it.
	pid, _ := onlyVolume(t, stateDir)
	syscall.Kill(pid, syscall.SIGKILL)
	waitForCondition(t, "the plugin to report the mount down", func() bool {
		up, ok := metricValue(scrapeCSI(t, srv.URL), "modelfs_csi_volume_mount_up", vol)
		return ok && up == 0
	})
	// The alerts' one other series is Prometheus's own up, per target.
	if other := regexp.MustCompile(`expr: (\w+)\{`).FindAllStringSubmatch(string(rules), -1); len(other) != 1 || other[0][1] != "up" {
		t.Errorf("alert expressions starting with a series other than modelfs's: %q", other)
	}
}
