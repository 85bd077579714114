package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/modelfs/modelfs/csi"
)

// scrapeCSI fetches the plugin's /metrics over HTTP and parses it.
func scrapeCSI(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// metricValue is the value of the series of family name whose labels
// include want, and whether there is one.
func metricValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == k && l.GetValue() == v)
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
		return 0, true
	}
	return 0, false
}

// TestCSIMetrics publishes a volume, reads it, and finds the read in the
// plugin's /metrics, labelled with the volume and its pod, next to the
// plugin's own counters; after unpublish the volume's series are gone.
func TestCSIMetrics(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIWith(t, stateDir, func(o *csi.Options) { o.Metrics = true })
	srv := httptest.NewServer(p.driver.MetricsHandler())
	defer srv.Close()
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "pods", "uid-1", "volumes", "kubernetes.io~csi", "model", "mount")
	if err := p.publish(ctx, "vol-m", target, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	checkModel(t, target)
	size := int64(0)
	filepath.Walk(target, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			size += fi.Size()
		}
		return nil
	})

	mfs := scrapeCSI(t, srv.URL)
	vol := map[string]string{"volume": "vol-m", "pod_uid": "uid-1"}
	if n, ok := metricValue(mfs, "modelfs_csi_volumes_mounted", nil); !ok || n != 1 {
		t.Errorf("modelfs_csi_volumes_mounted = %v (%v), want 1", n, ok)
	}
	if n, _ := metricValue(mfs, "modelfs_csi_calls_total", map[string]string{"method": "NodePublishVolume", "code": "OK"}); n != 1 {
		t.Errorf("NodePublishVolume OK calls = %v, want 1", n)
	}
	if _, ok := metricValue(mfs, "modelfs_csi_adopted_volumes_total", map[string]string{"result": "wedged"}); !ok {
		t.Error("no adoption counters")
	}
	// The model was read through the mount: its FUSE reads are the
	// volume's.
	if n, ok := metricValue(mfs, "modelfs_fuse_read_bytes_total", vol); !ok || n <= 0 || int64(n) > 2*size {
		t.Errorf("the volume's modelfs_fuse_read_bytes_total = %v (%v); want the %d bytes read", n, ok, size)
	}

	if _, ok := metricValue(mfs, "go_goroutines", vol); !ok {
		t.Error("the mount process's runtime metrics are missing")
	}
	if strings.Contains(p.log.String(), "gathering metrics") {
		t.Errorf("the scrape logged errors:\n%s", p.log.String())
	}

	if _, err := p.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "vol-m", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	mfs = scrapeCSI(t, srv.URL)
	if _, ok := metricValue(mfs, "modelfs_fuse_read_bytes_total", vol); ok {
		t.Error("the volume's series outlived its unpublish")
	}
	if n, _ := metricValue(mfs, "modelfs_csi_volumes_mounted", nil); n != 0 {
		t.Errorf("modelfs_csi_volumes_mounted = %v after unpublish, want 0", n)
	}
	if n, _ := metricValue(mfs, "modelfs_csi_calls_total", map[string]string{"method": "NodeUnpublishVolume", "code": "OK"}); n != 1 {
		t.Errorf("NodeUnpublishVolume OK calls = %v, want 1", n)
	}
}

// TestCSIMetricsFlag runs `modelfs csi --metrics-addr` as a node would
// (with sizes written as Kubernetes quantities) and scrapes a published
// volume's metrics from it.
func TestCSIMetricsFlag(t *testing.T) {
	needFuse(t)
	r, stateDir := csiRemote(t)
	sock := filepath.Join(t.TempDir(), "csi.sock")
	log := &syncBuffer{}
	plugin := exec.Command(modelfsBin, "csi", "--endpoint", "unix://"+sock, "--node-id", "node-1", "--state-dir", stateDir,
		"--allow-networks", "127.0.0.0/8", "--max-mem-cache", "2Gi", "--cache-size", "10Gi", "--metrics-addr", "127.0.0.1:0")
	plugin.Stdout, plugin.Stderr = log, log
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- plugin.Wait() }()
	t.Cleanup(func() {
		plugin.Process.Signal(syscall.SIGTERM)
		<-done
	})
	p := &csiPlugin{sock: sock, stateDir: stateDir}
	p.dial(t)
	addr := regexp.MustCompile(`msg="serving metrics" addr=(\S+)`).FindStringSubmatch(log.String())
	if addr == nil {
		t.Fatalf("no metrics address logged:\n%s", log.String())
	}
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "pods", "uid-2", "volumes", "kubernetes.io~csi", "model", "mount")
	detachLater(t, target)
	attrs := r.volumeContext("llama/")
	attrs["memCache"] = "1536Mi" // over the default cap of 1Gi, within --max-mem-cache
	if err := p.publish(ctx, "vol-f", target, attrs, testSecrets()); err != nil {
		t.Fatal(err)
	}
	checkModel(t, target)
	mfs := scrapeCSI(t, "http://"+addr[1])
	if n, ok := metricValue(mfs, "modelfs_fuse_read_bytes_total", map[string]string{"volume": "vol-f", "pod_uid": "uid-2"}); !ok || n <= 0 {
		t.Errorf("the volume's modelfs_fuse_read_bytes_total = %v (%v)", n, ok)
	}
	if n, _ := metricValue(mfs, "modelfs_csi_volumes_mounted", nil); n != 1 {
		t.Errorf("modelfs_csi_volumes_mounted = %v, want 1", n)
	}
	unpublish(t, p, "vol-f", target)
}
