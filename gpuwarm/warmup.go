package gpuwarm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WarmupOptions describe the warm-up of an OpenAI-compatible server.
type WarmupOptions struct {
	// URL is the completions endpoint, like http://127.0.0.1:8000/v1/completions.
	URL string
	// HealthURL must answer 200 before the first request (default: URL's
	// scheme and host, path /health).
	HealthURL string
	// Timeout bounds the whole warm-up, waiting for health included
	// (default 10m).
	Timeout time.Duration
	// Shapes to warm up, each Iters times (default 1x128, 3 times).
	Shapes []Shape
	Iters  int
	// Model is the model name to ask for (default: the first that
	// /v1/models lists).
	Model string
	// MaxTokens per request (default 8).
	MaxTokens int
	// Client sends the requests (default: a plain http.Client).
	Client *http.Client
}

// Shape is one warm-up batch: Batch concurrent requests, each with a
// prompt of about PromptTokens tokens.
type Shape struct{ Batch, PromptTokens int }

func (s Shape) String() string { return fmt.Sprintf("%dx%d", s.Batch, s.PromptTokens) }

// ParseShapes reads shapes like "1x128,4x512".
func ParseShapes(s string) ([]Shape, error) {
	var out []Shape
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		b, l, ok := strings.Cut(strings.ToLower(f), "x")
		bn, err1 := strconv.Atoi(b)
		ln, err2 := strconv.Atoi(l)
		if !ok || err1 != nil || err2 != nil || bn < 1 || ln < 1 || bn > 4096 || ln > 1<<20 {
			return nil, fmt.Errorf("warm-up shape %q: want BATCHxTOKENS, like 4x512", f)
		}
		out = append(out, Shape{bn, ln})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("warm-up shapes %q: none given", s)
	}
	return out, nil
}

// ShapeResult is the warm-up of one shape: the first batch's latency
// against the median of the others'.
type ShapeResult struct {
	Shape        string    `json:"shape"`
	Batch        int       `json:"batch"`
	PromptTokens int       `json:"prompt_tokens"`
	Requests     int       `json:"requests"`
	WarmupMS     float64   `json:"warmup_ms"`
	StableMS     float64   `json:"stable_ms"`
	OverheadPct  float64   `json:"overhead_pct"`
	IterMS       []float64 `json:"iter_ms"`
}

func (o WarmupOptions) withDefaults() (WarmupOptions, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return o, fmt.Errorf("warm-up URL %q: want http(s)://host:port/v1/completions", o.URL)
	}
	if o.HealthURL == "" {
		o.HealthURL = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/health"}).String()
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if len(o.Shapes) == 0 {
		o.Shapes = []Shape{{1, 128}}
	}
	if o.Iters <= 0 {
		o.Iters = 3
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 8
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	return o, nil
}

// warmup waits for the server's health, then sends each shape Iters
// batches, one after the other.
func (w *Warmer) warmup(ctx context.Context, o WarmupOptions) ([]ShapeResult, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("warm-up took more than %s", o.Timeout))
	defer cancel()
	if err := w.waitHealthy(ctx, o); err != nil {
		return nil, err
	}
	if o.Model == "" {
		if o.Model, err = firstModel(ctx, o); err != nil {
			return nil, err
		}
	}
	var out []ShapeResult
	for _, s := range o.Shapes {
		res := ShapeResult{Shape: s.String(), Batch: s.Batch, PromptTokens: s.PromptTokens}
		for it := range o.Iters {
			t0 := w.now()
			if err := sendBatch(ctx, o, s, it); err != nil {
				return out, fmt.Errorf("shape %s: %w", s, err)
			}
			res.IterMS = append(res.IterMS, float64(w.now().Sub(t0).Microseconds())/1000)
			res.Requests += s.Batch
		}
		res.WarmupMS = res.IterMS[0]
		if rest := res.IterMS[1:]; len(rest) > 0 {
			sorted := slices.Sorted(slices.Values(rest))
			res.StableMS = sorted[len(sorted)/2]
			if res.StableMS > 0 {
				res.OverheadPct = (res.WarmupMS - res.StableMS) / res.StableMS * 100
			}
			w.m.warmup.WithLabelValues(res.Shape, "stable").Set(res.StableMS / 1000)
		}
		w.m.warmup.WithLabelValues(res.Shape, "warmup").Set(res.WarmupMS / 1000)
		w.log.Info("warmed up", "shape", res.Shape, "warmup_ms", res.WarmupMS, "stable_ms", res.StableMS,
			"overhead_pct", fmt.Sprintf("%.0f", res.OverheadPct))
		out = append(out, res)
	}
	return out, nil
}

// waitHealthy polls the health URL until it answers 200.
func (w *Warmer) waitHealthy(ctx context.Context, o WarmupOptions) error {
	tick := time.NewTicker(w.healthEvery)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.HealthURL, nil)
		if err != nil {
			return fmt.Errorf("health URL: %w", err)
		}
		resp, err := o.Client.Do(req)
		switch {
		case err == nil:
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		case ctx.Err() == nil || last == "":
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy (last: %s): %w", o.HealthURL, last, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// firstModel asks the server which model it serves.
func firstModel(ctx context.Context, o WarmupOptions) (string, error) {
	u, _ := url.Parse(o.URL)
	u.Path = strings.TrimSuffix(u.Path, "/completions") + "/models"
	if !strings.HasSuffix(u.Path, "/v1/models") {
		u.Path = "/v1/models"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("listing models (or name one): %w", err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("listing models at %s (or name one): %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list); err != nil || len(list.Data) == 0 || list.Data[0].ID == "" {
		return "", fmt.Errorf("listing models at %s: no model listed; name one", u)
	}
	return list.Data[0].ID, nil
}

// sendBatch sends s.Batch requests at once and waits for all of them.
func sendBatch(ctx context.Context, o WarmupOptions, s Shape, iter int) error {
	var wg sync.WaitGroup
	errs := make([]error, s.Batch)
	for i := range s.Batch {
		wg.Go(func() {
			// A distinct start per request keeps a prefix cache from
			// turning later iterations into cache hits.
			errs[i] = complete(ctx, o, prompt(fmt.Sprintf("warmup %s %d %d:", s, iter, i), s.PromptTokens))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// prompt is about n tokens: tag, then " hello" (one token in the common
// BPE vocabularies) to make up the count.
func prompt(tag string, n int) string {
	return tag + strings.Repeat(" hello", max(n-len(strings.Fields(tag))*3, 1))
}

// complete sends one completion request.
func complete(ctx context.Context, o WarmupOptions, prompt string) error {
	body, _ := json.Marshal(map[string]any{
		"model": o.Model, "prompt": prompt, "max_tokens": o.MaxTokens, "temperature": 0,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.Client.Do(req)
	if err != nil {
		if c := context.Cause(ctx); c != nil {
			return c
		}
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("%s: %s: %s", o.URL, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// KeepWarm sends one small request every interval until ctx is done, so
// that the server's lazily loaded state stays in memory. Failures are
// logged and counted, not fatal.
func (w *Warmer) KeepWarm(ctx context.Context, every time.Duration) {
	if w.opts.Warmup == nil || every <= 0 {
		return
	}
	o, err := w.opts.Warmup.withDefaults()
	if err != nil {
		return
	}
	if o.Model == "" {
		if o.Model, err = firstModel(ctx, o); err != nil {
			w.log.Warn("keep-warm disabled", "err", err)
			return
		}
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, max(every, time.Minute))
		err := complete(rctx, o, prompt(fmt.Sprintf("keep-warm %d:", n), 16))
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.m.keepWarm.WithLabelValues("error").Inc()
			w.log.Warn("keep-warm request failed", "err", err)
			continue
		}
		w.m.keepWarm.WithLabelValues("ok").Inc()
	}
}
