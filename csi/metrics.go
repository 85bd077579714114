package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// volumeScrapeTimeout bounds the gathering of one volume's metrics: a
// mount that does not answer drops out of that scrape, it does not hold
// up the others.
const volumeScrapeTimeout = 3 * time.Second

// pluginMetrics are the plugin's own counters, in a registry of its own.
type pluginMetrics struct {
	reg      *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	adoption *prometheus.CounterVec
	restarts *prometheus.CounterVec
}

func newPluginMetrics(m *mounter) *pluginMetrics {
	pm := &pluginMetrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelfs_csi_calls_total",
			Help: "NodePublishVolume and NodeUnpublishVolume calls, by method and gRPC code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "modelfs_csi_call_duration_seconds",
			Help: "Time NodePublishVolume and NodeUnpublishVolume took, by method (a publish includes the mount coming up and listing its source).",
			// 5ms to ~5.5min: a publish waits for the mount, up to --mount-timeout.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 17),
		}, []string{"method"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelfs_csi_mount_restarts_total",
			Help: "Restarts of volumes' mount processes that died, by result: restarted, failed (that try failed), gave_up (restarts spent; the pod must be restarted).",
		}, []string{"result"}),
		adoption: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelfs_csi_adopted_volumes_total",
			Help: "Volumes found at plugin start, by what became of them: kept, cleaned (mount process gone), wedged (not answering; stopped and detached), damaged (unreadable record), failed (could not be detached).",
		}, []string{"result"}),
	}
	mounts := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "modelfs_csi_volumes_mounted",
		Help: "Volumes this node's plugin has mounted (one mount process each).",
	}, func() float64 { return float64(len(m.records())) })
	pm.reg.MustRegister(pm.calls, pm.duration, pm.adoption, pm.restarts, mounts, mountUpCollector{m})
	// Zeros for every known label, so that rate() and alerts see the series
	// before the first event.
	for _, method := range []string{"NodePublishVolume", "NodeUnpublishVolume"} {
		pm.calls.WithLabelValues(method, "OK")
		pm.duration.WithLabelValues(method)
	}
	for _, r := range []string{"kept", "cleaned", "wedged", "damaged", "failed"} {
		pm.adoption.WithLabelValues(r)
	}
	for _, r := range []string{"restarted", "failed", "gave_up"} {
		pm.restarts.WithLabelValues(r)
	}
	return pm
}

func (pm *pluginMetrics) adopted(res adoption) {
	pm.adoption.WithLabelValues("kept").Add(float64(res.Kept))
	pm.adoption.WithLabelValues("cleaned").Add(float64(res.Cleaned))
	pm.adoption.WithLabelValues("wedged").Add(float64(res.Wedged))
	pm.adoption.WithLabelValues("damaged").Add(float64(res.Damaged))
	pm.adoption.WithLabelValues("failed").Add(float64(res.Failed))
}

// mountUpDesc reports, for each volume the plugin has mounted, whether its
// mount process still runs: a process that died leaves the pod a mount
// that fails every read, and its own metrics vanish with it, so only the
// plugin can tell.
var mountUpDesc = prometheus.NewDesc("modelfs_csi_volume_mount_up",
	"1 while the volume's mount process runs, 0 once it has died (the pod sees a broken mount).",
	[]string{"volume", "pod_uid"}, nil)

type mountUpCollector struct{ m *mounter }

func (c mountUpCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mountUpDesc }

func (c mountUpCollector) Collect(ch chan<- prometheus.Metric) {
	for _, rec := range c.m.records() {
		up := 0.0
		if ownsTarget(rec) {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(mountUpDesc, prometheus.GaugeValue, up, rec.VolumeID, podUID(rec.Target))
	}
}

// MetricsHandler serves the plugin's metrics and, with Options.Metrics,
// every mounted volume's, each series labelled with its volume id and the
// pod that mounts it.
func (d *Driver) MetricsHandler() http.Handler {
	gs := prometheus.Gatherers{d.metrics.reg}
	if d.opts.Metrics {
		gs = append(gs, volumeGatherer{d.mount})
	}
	// Errors go into the response and are counted, but a volume that
	// fails to answer must not blank out the rest.
	return promhttp.HandlerFor(gs, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: metricsLog{d.log}})
}

// metricsLog logs what a scrape could not gather.
type metricsLog struct{ log *slog.Logger }

func (l metricsLog) Println(v ...any) { l.log.Warn("gathering metrics", "err", fmt.Sprint(v...)) }

// volumeGatherer scrapes each volume's mount process over the unix socket
// it serves its metrics on, at each scrape: nothing is cached, so a volume
// shows up from its first scrape after publish and is gone after unpublish.
type volumeGatherer struct{ m *mounter }

func (g volumeGatherer) Gather() ([]*dto.MetricFamily, error) {
	// Volumes mounted while metrics were off have no socket: skip them
	// rather than report them failing at every scrape.
	recs := slices.DeleteFunc(g.m.records(), func(r *record) bool {
		_, err := os.Stat(g.m.metricsSocket(r.Target))
		return errors.Is(err, os.ErrNotExist)
	})
	results := make([]map[string]*dto.MetricFamily, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, rec := range recs {
		wg.Go(func() { results[i], errs[i] = scrapeVolume(g.m.metricsSocket(rec.Target)) })
	}
	wg.Wait()
	merged := map[string]*dto.MetricFamily{}
	var failed []string
	for i, rec := range recs {
		if errs[i] != nil {
			failed = append(failed, fmt.Sprintf("volume %s: %v", rec.VolumeID, errs[i]))
			continue
		}
		labels := []*dto.LabelPair{
			{Name: proto.String("volume"), Value: proto.String(rec.VolumeID)},
			{Name: proto.String("pod_uid"), Value: proto.String(podUID(rec.Target))},
		}
		for name, mf := range results[i] {
			// Process and Go runtime series describe the mount process,
			// which the volume label now names.
			into, ok := merged[name]
			if !ok {
				into = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit}
				merged[name] = into
			}
			for _, metric := range mf.Metric {
				metric.Label = append(slices.DeleteFunc(metric.Label, func(l *dto.LabelPair) bool {
					return l.GetName() == "volume" || l.GetName() == "pod_uid"
				}), labels...)
				into.Metric = append(into.Metric, metric)
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, mf := range merged {
		out = append(out, mf)
	}
	if len(failed) > 0 {
		return out, fmt.Errorf("gathering volume metrics: %s", strings.Join(failed, "; "))
	}
	return out, nil
}

// scrapeVolume reads one mount process's /metrics from its socket.
func scrapeVolume(sock string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), volumeScrapeTimeout)
	defer cancel()
	// Text, which the parser below reads whatever the mount's client
	// library would prefer.
	resp, err := volumeGet(ctx, sock, "/metrics", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	if err != nil {
		return nil, fmt.Errorf("scraping: %w", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	return mfs, nil
}

// volumeGet GETs path from the HTTP server a mount process serves on its
// own unix socket, never through the FUSE mount, which may be wedged. A
// status other than 200 is an error; on success the caller closes the
// body.
func volumeGet(ctx context.Context, sock, path, accept string) (*http.Response, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://volume"+path, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, errors.New(resp.Status)
	}
	return resp, nil
}

// podUID is the pod's UID in a kubelet target path
// (/var/lib/kubelet/pods/UID/volumes/...), or "" for another path.
func podUID(target string) string {
	parts := strings.Split(filepath.ToSlash(target), "/")
	for i := 0; i+2 < len(parts); i++ {
		if parts[i] == "pods" && parts[i+2] == "volumes" {
			return parts[i+1]
		}
	}
	return ""
}

// records lists the volumes the plugin has mounted; unreadable records
// are skipped (adopt removes them).
func (m *mounter) records() []*record {
	entries, _ := os.ReadDir(m.dir)
	var recs []*record
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		r, err := m.loadFile(filepath.Join(m.dir, e.Name()))
		if err == nil {
			recs = append(recs, r)
		}
	}
	return recs
}
