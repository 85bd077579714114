package mount

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/modelfs/modelfs/mount/config"
)

// Every cache counter has one name: its JSON tag in the stats file, its
// key in the unmount log line; and its Prometheus metric carries the same
// value.
func TestSnapshotHasOneSetOfNames(t *testing.T) {
	var c CacheTotals
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		v.Field(i).SetInt(int64(i + 1)) // each field its own value
	}
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var byName map[string]int64
	if err := json.Unmarshal(raw, &byName); err != nil {
		t.Fatal(err)
	}
	if len(cacheCounters) != v.NumField() || len(byName) != v.NumField() {
		t.Fatalf("%d counters listed, %d JSON names, for %d fields", len(cacheCounters), len(byName), v.NumField())
	}
	metrics := map[string]bool{}
	for _, k := range cacheCounters {
		if got, ok := byName[k.name]; !ok || got != k.value(&c) {
			t.Errorf("counter %q: JSON has %d (present %v), the counter reads %d", k.name, got, ok, k.value(&c))
		}
		if metrics[k.metric] {
			t.Errorf("metric %s listed twice", k.metric)
		}
		metrics[k.metric] = true
	}
	attrs := logAttrs(c, FUSETotals{Reads: 1, ReadBytes: 2, ReadErrors: 3, PassthroughOpens: 4})
	logged := map[string]any{}
	for i := 0; i < len(attrs); i += 2 {
		logged[attrs[i].(string)] = attrs[i+1]
	}
	for name, want := range byName {
		if logged[name] != want {
			t.Errorf("log key %q = %v, want %d as in the JSON", name, logged[name], want)
		}
	}
	for name, want := range map[string]int64{"fuse_reads": 1, "fuse_read_bytes": 2, "fuse_read_errors": 3, "passthrough_opens": 4} {
		if logged[name] != want {
			t.Errorf("log key %q = %v, want %d", name, logged[name], want)
		}
	}
}

// The Prometheus collector reports what the snapshot does.
func TestMetricsMatchTheSnapshot(t *testing.T) {
	dir := t.TempDir()
	model := writeSafetensors(t, filepath.Join(dir, "model.safetensors"), 2, 16<<10)
	// No prefetch: nothing moves the counters between the two reads of them.
	e := newTestEngine(t, dir, func(c *config.Config) { c.Prefetch = config.PrefetchOff })
	readAll(t, fileByPath(t, e.Files(), "model.safetensors"), 1<<16)
	m := newMetrics()
	m.mount.cache.Store(e.r.cache)
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			switch {
			case mt.Counter != nil:
				got[f.GetName()] = mt.Counter.GetValue()
			case mt.Gauge != nil:
				got[f.GetName()] = mt.Gauge.GetValue()
			}
		}
	}
	st := e.Snapshot().Cache
	if st.FetchedBytes != int64(len(model)) {
		t.Fatalf("snapshot says %d bytes fetched, want %d", st.FetchedBytes, len(model))
	}
	for _, k := range cacheCounters {
		v, ok := got[k.metric]
		if !ok || v != float64(k.value(&st)) {
			t.Errorf("%s = %v (present %v), snapshot's %s = %d", k.metric, v, ok, k.name, k.value(&st))
		}
	}
}
