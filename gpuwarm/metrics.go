package gpuwarm

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const metricPrefix = "modelfs_gpuwarm_"

// metrics are a Warmer's, in its own registry.
type metrics struct {
	ready       prometheus.Gauge
	phase       *prometheus.GaugeVec
	pinnedBytes prometheus.GaugeFunc
	tensorBytes prometheus.Gauge
	gpus        prometheus.Gauge
	warmup      *prometheus.GaugeVec
	keepWarm    *prometheus.CounterVec
}

var (
	gpuFreeDesc = prometheus.NewDesc(metricPrefix+"gpu_memory_free_bytes",
		"Free GPU memory, read from NVML at scrape time.", []string{"gpu", "uuid"}, nil)
	gpuTotalDesc = prometheus.NewDesc(metricPrefix+"gpu_memory_total_bytes",
		"Total GPU memory.", []string{"gpu", "uuid"}, nil)
)

func newMetrics(reg *prometheus.Registry, w *Warmer) *metrics {
	m := &metrics{
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + "ready",
			Help: "1 once the GPU checks passed, the pins are in place and the warm-up is done."}),
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricPrefix + "phase_duration_seconds",
			Help: "How long each phase took: nvml_init, inventory, plan, pin, warmup."}, []string{"phase"}),
		pinnedBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: metricPrefix + "pinned_bytes",
			Help: "Bytes of the model locked in memory (rising while pinning)."},
			func() float64 { return float64(w.pinned.Load()) }),
		tensorBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + "tensor_bytes",
			Help: "Bytes of tensors in the model's headers."}),
		gpus: prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + "gpus",
			Help: "GPUs NVML reports (0 without a driver)."}),
		warmup: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricPrefix + "warmup_latency_seconds",
			Help: "Latency of a warm-up batch of each shape: the first (warmup) and the median of the rest (stable)."},
			[]string{"shape", "kind"}),
		keepWarm: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "keepwarm_requests_total",
			Help: "Keep-warm requests sent, by result."}, []string{"result"}),
	}
	reg.MustRegister(m.ready, m.phase, m.pinnedBytes, m.tensorBytes, m.gpus, m.warmup, m.keepWarm,
		prometheus.CollectorFunc(w.collectGPUMemory))
	return m
}

// collectGPUMemory reports each GPU's memory as NVML has it now: while a
// sidecar holds on, the server's own allocations show here.
func (w *Warmer) collectGPUMemory(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lib == nil || w.inv == nil {
		return
	}
	for _, g := range w.inv.GPUs {
		m, err := g.dev.GetMemoryInfo()
		if err != nil {
			continue
		}
		idx := strconv.Itoa(g.Index)
		ch <- prometheus.MustNewConstMetric(gpuFreeDesc, prometheus.GaugeValue, float64(m.Free), idx, g.UUID)
		ch <- prometheus.MustNewConstMetric(gpuTotalDesc, prometheus.GaugeValue, float64(m.Total), idx, g.UUID)
	}
}

// Handler serves /readyz (503 until Run has made everything ready, then
// 200 until Unready), /livez (200 while the process serves) and /metrics.
func (w *Warmer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if w.ready.Load() {
			rw.Write([]byte("ready\n"))
			return
		}
		rw.WriteHeader(http.StatusServiceUnavailable)
		rw.Write([]byte("not ready: " + *w.phase.Load() + "\n"))
	})
	mux.HandleFunc("GET /livez", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{Registry: w.reg}))
	return mux
}
