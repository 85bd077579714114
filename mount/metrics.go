package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/sharedtier"
)

// metrics are a mount's Prometheus metrics, in a registry of their own so
// that nothing global leaks in and tests can build several.
type metrics struct {
	reg *prometheus.Registry

	requests, bytes, retries, errors *prometheus.CounterVec
	getSeconds                       *prometheus.HistogramVec
	fuseSeconds                      *prometheus.HistogramVec
	firstByteSeconds                 prometheus.Histogram
	sharedGetSeconds                 *prometheus.HistogramVec

	mount mountCollector
	// stats is the mount's snapshot, served at /stats (JSON, as the stats
	// file): how the CSI plugin learns a volume's size and health without
	// touching its FUSE mount, which may hang.
	stats atomic.Pointer[statsReporter]
}

func newMetrics() *metrics {
	// model is the manifest's model name, empty for a single SOURCE.
	labels := []string{"source", "model", "op"}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelfs_fetch_requests_total", Help: "Requests to the source, by source kind, model and operation, counted once however many tries they took.",
		}, labels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelfs_fetch_bytes_total", Help: "Bytes successful requests returned from the source.",
		}, labels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelfs_fetch_retries_total", Help: "Tries that failed transiently and were repeated.",
		}, labels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelfs_fetch_errors_total", Help: "Requests that failed for good (retries spent, or a permanent error).",
		}, labels),
		getSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "modelfs_fetch_get_duration_seconds", Help: "Latency of ranged GETs, retries and backoff included.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 15), // 2ms to ~33s
		}, []string{"source", "model"}),
		fuseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "modelfs_fuse_op_duration_seconds", Help: "Time modelfs took to answer a FUSE operation, by operation (a read includes waiting for its blocks).",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12), // 10µs to ~42s
		}, []string{"op"}),
		firstByteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "modelfs_file_first_byte_seconds", Help: "Per file, once per mount: time from the file's first open to the first byte modelfs served of it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17), // 1ms to ~65s
		}),
		sharedGetSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "modelfs_shared_get_duration_seconds", Help: "Latency of GETs of the shared cache, body included, by outcome (hit, miss, damaged, error).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1ms to ~16s
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.requests, m.bytes, m.retries, m.errors, m.getSeconds, m.fuseSeconds, m.firstByteSeconds, m.sharedGetSeconds, &m.mount,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observer returns the fetch.Observer for a source of this kind, serving
// this model ("" for a single SOURCE). The kind and the operator's model
// name are labels, never the source: URLs may carry credentials or
// signatures.
func (m *metrics) observer(kind, model string) fetch.Observer {
	if m == nil {
		return nil
	}
	return &fetchObserver{m: m, kind: kind, model: model}
}

type fetchObserver struct {
	m           *metrics
	kind, model string
}

func (o *fetchObserver) Request(op string, bytes int64, d time.Duration, err error) {
	o.m.requests.WithLabelValues(o.kind, o.model, op).Inc()
	if err != nil {
		o.m.errors.WithLabelValues(o.kind, o.model, op).Inc()
	} else if bytes > 0 {
		o.m.bytes.WithLabelValues(o.kind, o.model, op).Add(float64(bytes))
	}
	if op == fetch.OpGet {
		o.m.getSeconds.WithLabelValues(o.kind, o.model).Observe(d.Seconds())
	}
}

func (o *fetchObserver) Retry(op string) { o.m.retries.WithLabelValues(o.kind, o.model, op).Inc() }

// sharedObserver returns the sharedtier.Observer feeding the shared
// cache's latency histogram, or nil.
func (m *metrics) sharedObserver() sharedtier.Observer {
	if m == nil {
		return nil
	}
	return sharedObserver{m.sharedGetSeconds}
}

type sharedObserver struct{ h *prometheus.HistogramVec }

func (o sharedObserver) SharedGet(outcome string, d time.Duration) {
	o.h.WithLabelValues(outcome).Observe(d.Seconds())
}

// fuseObserver returns the fs.Observer feeding the FUSE histograms, or nil.
func (m *metrics) fuseObserver() fs.Observer {
	if m == nil {
		return nil
	}
	o := &fuseObserver{m: m}
	for _, op := range fs.Ops() {
		// Resolved once: a read then costs no label lookup.
		o.ops = append(o.ops, m.fuseSeconds.WithLabelValues(op.String()))
	}
	return o
}

type fuseObserver struct {
	m   *metrics
	ops []prometheus.Observer // by fs.Op
}

func (o *fuseObserver) Op(op fs.Op, d time.Duration) {
	if int(op) < len(o.ops) {
		o.ops[op].Observe(d.Seconds())
	}
}

func (o *fuseObserver) FirstByte(d time.Duration) { o.m.firstByteSeconds.Observe(d.Seconds()) }

// sourceKind is the metrics label for a location's scheme.
func sourceKind(scheme string) string {
	if scheme == "https" {
		return "http"
	}
	return scheme
}

// mountCollector reads the block cache's and the FUSE server's counters at
// scrape time, so neither package needs to know about Prometheus. Both are
// set once they exist; until then their metrics are absent.
type mountCollector struct {
	cache  atomic.Pointer[blockcache.Cache]
	shared atomic.Pointer[sharedtier.Tier] // nil without a shared tier
	fuse   atomic.Pointer[fs.Stats]
}

// cacheDescs are the Prometheus descriptions of cacheCounters, in order.
var cacheDescs = func() []*prometheus.Desc {
	descs := make([]*prometheus.Desc, len(cacheCounters))
	for i, k := range cacheCounters {
		descs[i] = prometheus.NewDesc(k.metric, k.help, nil, nil)
	}
	return descs
}()

// verifyFailedDesc names each file that failed its check.
var verifyFailedDesc = prometheus.NewDesc("modelfs_verify_failed", "1 for each file whose bytes did not match its store's checksum.", []string{"file"}, nil)

var (
	fuseReadsDesc      = prometheus.NewDesc("modelfs_fuse_reads_total", "Reads modelfs served itself (not the page cache or passthrough).", nil, nil)
	fuseReadBytesDesc  = prometheus.NewDesc("modelfs_fuse_read_bytes_total", "Bytes those reads returned.", nil, nil)
	fuseReadErrorsDesc = prometheus.NewDesc("modelfs_fuse_read_errors_total", "Reads that failed (EIO and the like).", nil, nil)
	passthroughDesc    = prometheus.NewDesc("modelfs_passthrough_opens_total", "Opens handed a complete cache file for the kernel to read directly.", nil, nil)
)

func (mc *mountCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range cacheDescs {
		ch <- d
	}
	ch <- verifyFailedDesc
	ch <- fuseReadsDesc
	ch <- fuseReadBytesDesc
	ch <- fuseReadErrorsDesc
	ch <- passthroughDesc
}

func (mc *mountCollector) Collect(ch chan<- prometheus.Metric) {
	if c := mc.cache.Load(); c != nil {
		st := cacheTotals(c.Stats())
		if s := mc.shared.Load(); s != nil {
			st.addShared(s.Stats())
		}
		for i, k := range cacheCounters {
			kind := prometheus.CounterValue
			if k.gauge {
				kind = prometheus.GaugeValue
			}
			ch <- prometheus.MustNewConstMetric(cacheDescs[i], kind, float64(k.value(&st)))
		}
		for _, id := range c.VerifyFailures() {
			ch <- prometheus.MustNewConstMetric(verifyFailedDesc, prometheus.GaugeValue, 1, id.Name)
		}
	}
	if f := mc.fuse.Load(); f != nil {
		ft := fuseTotals(f)
		ch <- prometheus.MustNewConstMetric(fuseReadsDesc, prometheus.CounterValue, float64(ft.Reads))
		ch <- prometheus.MustNewConstMetric(fuseReadBytesDesc, prometheus.CounterValue, float64(ft.ReadBytes))
		ch <- prometheus.MustNewConstMetric(fuseReadErrorsDesc, prometheus.CounterValue, float64(ft.ReadErrors))
		ch <- prometheus.MustNewConstMetric(passthroughDesc, prometheus.CounterValue, float64(ft.PassthroughOpens))
	}
}

// serveMetrics binds addr at once, so a bad address fails before anything
// is mounted and the bound address (addr may end in :0) can be logged, then
// serves /metrics and, with withPprof, /debug/pprof/ in the background. The
// returned func stops the server.
func serveMetrics(m *metrics, addr string, withPprof bool, log *slog.Logger) (func(), error) {
	network := "tcp"
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		// The CSI plugin gathers each volume's metrics from a socket in
		// its private state dir: no port per volume, none reachable by
		// pods. One left by a process that died would fail the bind.
		network, addr = "unix", path
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		s := m.stats.Load()
		if s == nil {
			http.Error(w, "the mount is not up yet", http.StatusServiceUnavailable)
			return
		}
		b, err := s.snapshot()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("serving metrics", "addr", ln.Addr().String(), "pprof", withPprof)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
