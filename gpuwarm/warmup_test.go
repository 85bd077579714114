package gpuwarm

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock moves only when told to.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time            { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration)   { c.ns.Add(int64(d)) }
func (c *fakeClock) install(w *Warmer) *Warmer { w.now = c.now; return w }

// fakeLLM is an OpenAI-compatible server that is unhealthy for the first
// unhealthy polls, and slow the first time it sees each shape: that
// request waits on the test, which moves the clock by 2s meanwhile; every
// other request moves it by 100ms.
type fakeLLM struct {
	clock     *fakeClock
	unhealthy int32
	failWith  int // status for completions; 0: 200

	health    atomic.Int32
	keepWarm  chan struct{} // a keep-warm request arrived (the first 3)
	firstSeen chan string   // a shape's first request arrived
	release   chan struct{} // let it answer

	mu     sync.Mutex
	counts map[string]int // requests per shape
	models map[string]int // requests per model name
}

func newFakeLLM(clock *fakeClock) *fakeLLM {
	return &fakeLLM{clock: clock, firstSeen: make(chan string), release: make(chan struct{}), keepWarm: make(chan struct{}, 3),
		counts: map[string]int{}, models: map[string]int{}}
}

func (f *fakeLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/health":
		if f.health.Add(1) <= f.unhealthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	case "/v1/models":
		w.Write([]byte(`{"object":"list","data":[{"id":"tiny-llama","object":"model"}]}`))
	case "/v1/completions":
		var req struct {
			Model     string `json:"model"`
			Prompt    string `json:"prompt"`
			MaxTokens int    `json:"max_tokens"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.MaxTokens < 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if f.failWith != 0 {
			http.Error(w, "model exploded", f.failWith)
			return
		}
		// "warmup 4x512 <iter> <i>: hello hello ..."
		fields := strings.Fields(req.Prompt)
		shape := "keep-warm"
		if fields[0] == "warmup" {
			shape = fields[1]
		}
		f.mu.Lock()
		f.counts[shape]++
		first := f.counts[shape] == 1
		f.models[req.Model]++
		f.mu.Unlock()
		if shape == "keep-warm" {
			select {
			case f.keepWarm <- struct{}{}:
			default:
			}
		}
		if first && shape != "keep-warm" {
			f.firstSeen <- shape
			<-f.release
		} else {
			f.clock.advance(100 * time.Millisecond)
		}
		w.Write([]byte(`{"choices":[{"text":" ok"}]}`))
	default:
		http.NotFound(w, r)
	}
}

func TestParseShapes(t *testing.T) {
	got, err := ParseShapes("1x128, 4X512,")
	if err != nil || len(got) != 2 || got[0] != (Shape{1, 128}) || got[1] != (Shape{4, 512}) {
		t.Fatalf("ParseShapes = %v, %v", got, err)
	}
	for _, bad := range []string{"", "4", "x128", "0x10", "2x0", "axb", "1x128,4"} {
		if _, err := ParseShapes(bad); err == nil {
			t.Errorf("ParseShapes(%q) accepted", bad)
		}
	}
	if p := prompt("warmup 1x128 0 0:", 128); len(strings.Fields(p)) < 100 || len(strings.Fields(p)) > 128 {
		t.Errorf("prompt of %d words for 128 tokens", len(strings.Fields(p)))
	}
}

func TestWarmup(t *testing.T) {
	clock := &fakeClock{}
	llm := newFakeLLM(clock)
	llm.unhealthy = 2
	srv := httptest.NewServer(llm)
	defer srv.Close()
	shapes := []Shape{{1, 16}, {4, 64}}
	w := clock.install(New(Options{Model: t.TempDir(), Log: discard, Warmup: &WarmupOptions{
		URL: srv.URL + "/v1/completions", Shapes: shapes, Iters: 3, Timeout: time.Minute,
	}}))
	w.healthEvery = time.Millisecond
	defer w.Close()

	// Pay each shape's first request: 2s on the fake clock.
	go func() {
		for range shapes {
			<-llm.firstSeen
			clock.advance(2 * time.Second)
			llm.release <- struct{}{}
		}
	}()
	rep, err := w.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h := llm.health.Load(); h != 3 {
		t.Errorf("health polled %d times, want 3 (two 503s, then 200)", h)
	}
	if llm.counts["1x16"] != 3 || llm.counts["4x64"] != 12 || llm.models["tiny-llama"] != 15 {
		t.Errorf("requests per shape %v, per model %v", llm.counts, llm.models)
	}
	want := []ShapeResult{
		// 1x16: the first batch is the slow request alone; the others 100ms.
		{Shape: "1x16", Batch: 1, PromptTokens: 16, Requests: 3, WarmupMS: 2000, StableMS: 100, OverheadPct: 1900},
		// 4x64: the slow request plus three at 100ms, against four at 100ms.
		{Shape: "4x64", Batch: 4, PromptTokens: 64, Requests: 12, WarmupMS: 2300, StableMS: 400, OverheadPct: 475},
	}
	if len(rep.Warmup) != len(want) {
		t.Fatalf("warm-up results %+v", rep.Warmup)
	}
	for i, w := range want {
		g := rep.Warmup[i]
		if g.Shape != w.Shape || g.Batch != w.Batch || g.PromptTokens != w.PromptTokens || g.Requests != w.Requests ||
			g.WarmupMS != w.WarmupMS || g.StableMS != w.StableMS || g.OverheadPct != w.OverheadPct || len(g.IterMS) != 3 {
			t.Errorf("shape %s: got %+v, want %+v", w.Shape, g, w)
		}
	}
	if _, ok := rep.PhasesMS["warmup"]; !ok || !rep.Ready {
		t.Errorf("report %+v", rep)
	}
	if m := scrape(t, w); !strings.Contains(m, `modelfs_gpuwarm_warmup_latency_seconds{kind="warmup",shape="4x64"} 2.3`) {
		t.Errorf("metrics:\n%s", m)
	}
}

// TestWarmupNotReadyUntilDone: a failing server keeps the Warmer not ready.
func TestWarmupFails(t *testing.T) {
	clock := &fakeClock{}
	llm := newFakeLLM(clock)
	llm.failWith = http.StatusInternalServerError
	srv := httptest.NewServer(llm)
	defer srv.Close()
	w := New(Options{Model: t.TempDir(), Log: discard, Warmup: &WarmupOptions{URL: srv.URL + "/v1/completions", Model: "m"}})
	defer w.Close()
	rep, err := w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "500 Internal Server Error: model exploded") || rep.Ready || w.ready.Load() {
		t.Fatalf("Run = %+v, %v; want the server's error", rep, err)
	}
}

func TestWarmupHealthTimeout(t *testing.T) {
	llm := newFakeLLM(&fakeClock{})
	llm.unhealthy = 1 << 30
	srv := httptest.NewServer(llm)
	defer srv.Close()
	w := New(Options{Model: t.TempDir(), Log: discard, Warmup: &WarmupOptions{
		URL: srv.URL + "/v1/completions", HealthURL: srv.URL + "/health", Timeout: 50 * time.Millisecond}})
	w.healthEvery = time.Millisecond
	defer w.Close()
	_, err := w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not healthy (last: 503 Service Unavailable)") || !strings.Contains(err.Error(), "more than 50ms") {
		t.Fatalf("error %v, want the health timeout", err)
	}
}

func TestWarmupBadURL(t *testing.T) {
	w := New(Options{Model: t.TempDir(), Log: discard, Warmup: &WarmupOptions{URL: "localhost:8000"}})
	defer w.Close()
	rep, err := w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "want http(s)://") || len(rep.PhasesMS) != 0 {
		t.Fatalf("Run = %+v, %v; want the URL refused before any work", rep, err)
	}
}

func TestKeepWarm(t *testing.T) {
	llm := newFakeLLM(&fakeClock{})
	srv := httptest.NewServer(llm)
	defer srv.Close()
	w := New(Options{Model: t.TempDir(), Log: discard, Warmup: &WarmupOptions{URL: srv.URL + "/v1/completions"}})
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.KeepWarm(ctx, time.Millisecond); close(done) }()
	for range 3 {
		select {
		case <-llm.keepWarm:
		case <-done:
			t.Fatal("KeepWarm returned early")
		}
	}
	cancel()
	<-done
	if m := scrape(t, w); !strings.Contains(m, `modelfs_gpuwarm_keepwarm_requests_total{result="ok"}`) {
		t.Errorf("metrics:\n%s", m)
	}
}
