package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	promodel "github.com/prometheus/common/model"

	"github.com/modelfs/modelfs/tests/promtest"
)

// mountMetrics are the counters of one mount the soak checks, from its
// /metrics (names as cmd/modelfs/metrics.go defines them).
type mountMetrics struct {
	Gets, Retries, FetchErrors     int64 // ranged GETs: requests, failed tries retried, requests failed for good
	FuseReads, FuseReadErrors      int64
	LoadErrors, Prefetches         int64
	RAMEvictions, DiskEvictions    int64
	DiskHits, DiskCorrupt, DiskMax int64
	// The Go runtime's view, to tell heap growth from cache memory when
	// RSS is high: bytes in in-use heap spans, and all it got from the OS.
	HeapInuse, GoSys int64
}

func (m *mountMetrics) add(o mountMetrics) {
	m.Gets += o.Gets
	m.Retries += o.Retries
	m.FetchErrors += o.FetchErrors
	m.FuseReads += o.FuseReads
	m.FuseReadErrors += o.FuseReadErrors
	m.LoadErrors += o.LoadErrors
	m.Prefetches += o.Prefetches
	m.RAMEvictions += o.RAMEvictions
	m.DiskEvictions += o.DiskEvictions
	m.DiskHits += o.DiskHits
	m.DiskCorrupt += o.DiskCorrupt
	m.DiskMax = max(m.DiskMax, o.DiskMax)
	m.HeapInuse = max(m.HeapInuse, o.HeapInuse)
	m.GoSys = max(m.GoSys, o.GoSys)
}

// scrapeMount reads a mount's /metrics.
func scrapeMount(ctx context.Context, url string) (mountMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return mountMetrics{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return mountMetrics{}, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return mountMetrics{}, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return mountMetrics{}, fmt.Errorf("scraping %s: %w", url, err)
	}
	parser := expfmt.NewTextParser(promodel.UTF8Validation)
	mf, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return mountMetrics{}, fmt.Errorf("parsing %s: %w", url, err)
	}
	get := map[string]string{"op": "get"}
	return mountMetrics{
		Gets:           sum(mf, "modelfs_fetch_requests_total", get),
		Retries:        sum(mf, "modelfs_fetch_retries_total", get),
		FetchErrors:    sum(mf, "modelfs_fetch_errors_total", nil),
		FuseReads:      sum(mf, "modelfs_fuse_reads_total", nil),
		FuseReadErrors: sum(mf, "modelfs_fuse_read_errors_total", nil),
		LoadErrors:     sum(mf, "modelfs_cache_load_errors_total", nil),
		Prefetches:     sum(mf, "modelfs_cache_prefetches_total", nil),
		RAMEvictions:   sum(mf, "modelfs_cache_evictions_total", nil),
		DiskEvictions:  sum(mf, "modelfs_cache_disk_evictions_total", nil),
		DiskHits:       sum(mf, "modelfs_cache_disk_hits_total", nil),
		DiskCorrupt:    sum(mf, "modelfs_cache_disk_corrupt_total", nil),
		DiskMax:        sum(mf, "modelfs_cache_disk_capacity_bytes", nil),
		HeapInuse:      sum(mf, "go_memstats_heap_inuse_bytes", nil),
		GoSys:          sum(mf, "go_memstats_sys_bytes", nil),
	}, nil
}

// sum adds the values of a counter or gauge family over the series whose
// labels include want. A family that is absent counts 0: counter vectors
// show no series until their first increment.
func sum(mf map[string]*dto.MetricFamily, name string, want map[string]string) int64 {
	var total float64
	for _, m := range promtest.Series(mf, name, want) {
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return int64(total)
}
