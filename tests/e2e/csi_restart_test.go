package e2e

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/modelfs/modelfs/csi"
)

// TestCSIMountRestart kills a published volume's mount process: the
// plugin starts it again at the same target, the model reads whole
// again, and the restart is counted.
func TestCSIMountRestart(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIWith(t, stateDir, func(o *csi.Options) {
		o.Metrics = true
		o.RestartBackoff = 10 * time.Millisecond
	})
	srv := httptest.NewServer(p.driver.MetricsHandler())
	defer srv.Close()
	restarts := func(result string) float64 {
		n, _ := metricValue(scrapeCSI(t, srv.URL), "modelfs_csi_mount_restarts_total", map[string]string{"result": result})
		return n
	}
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "pods", "uid-r", "volumes", "kubernetes.io~csi", "model", "mount")
	if err := p.publish(ctx, "vol-r", target, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	checkModel(t, target)
	pid, _ := onlyVolume(t, stateDir)
	syscall.Kill(pid, syscall.SIGKILL)
	waitForCondition(t, "the mount to be restarted", func() bool { return restarts("restarted") == 1 })
	if pid2, _ := onlyVolume(t, stateDir); pid2 == pid || !processAlive(pid2) {
		t.Fatalf("after the restart the record names pid %d (was %d)", pid2, pid)
	}
	checkModel(t, target)
	if n := restarts("failed") + restarts("gave_up"); n != 0 {
		t.Errorf("%v failed restarts", n)
	}
	unpublish(t, p, "vol-r", target)
}
