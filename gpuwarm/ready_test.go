package gpuwarm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// holdPins makes w's first mlock call report on entered and wait for
// release.
func holdPins(w *Warmer) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	first := true
	w.pinner.workers = 1
	w.pinner.mlock = func(b []byte) error {
		if first {
			first = false
			close(entered)
			<-release
		}
		return unix.Mlock(b)
	}
	return entered, release
}

// TestReadinessAfterPinning: /readyz is 503 and there is no ready file
// while pinning, 200 with the file after; Unready turns both back.
func TestReadinessAfterPinning(t *testing.T) {
	dir := t.TempDir()
	testModel(t, dir, layeredModel)
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	w := New(Options{Model: dir, PinBytes: PinAll, ReadyFile: readyFile, Log: discard})
	defer w.Close()
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()

	if code, body := get(t, srv.URL+"/readyz"); code != 503 || body != "not ready: starting\n" {
		t.Errorf("/readyz before Run: %d %q", code, body)
	}
	entered, release := holdPins(w)
	done := make(chan error, 1)
	var rep *Report
	go func() {
		var err error
		rep, err = w.Run(context.Background())
		done <- err
	}()
	<-entered
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || body != "not ready: pin\n" {
		t.Errorf("/readyz while pinning: %d %q", code, body)
	}
	if code, _ := get(t, srv.URL+"/livez"); code != 200 {
		t.Errorf("/livez while pinning: %d", code)
	}
	if _, err := os.Stat(readyFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ready file before ready: %v", err)
	}
	if _, m := get(t, srv.URL+"/metrics"); !strings.Contains(m, "modelfs_gpuwarm_ready 0") {
		t.Errorf("metrics while pinning:\n%s", m)
	}
	close(release)
	<-w.Ready()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	data, err := os.ReadFile(readyFile)
	if err != nil {
		t.Fatal("ready file:", err)
	}
	var onDisk Report
	if err := json.Unmarshal(data, &onDisk); err != nil || !onDisk.Ready || onDisk.Pin.Bytes != rep.Pin.Bytes {
		t.Errorf("ready file %s: %v", data, err)
	}
	for _, phase := range []string{"nvml_init", "plan", "pin"} {
		if _, ok := rep.PhasesMS[phase]; !ok {
			t.Errorf("no %s timing in %v", phase, rep.PhasesMS)
		}
	}
	if _, ok := rep.PhasesMS["inventory"]; ok {
		t.Errorf("inventory timed without NVML: %v", rep.PhasesMS)
	}
	if _, m := get(t, srv.URL+"/metrics"); !strings.Contains(m, "modelfs_gpuwarm_ready 1") ||
		!strings.Contains(m, "modelfs_gpuwarm_pinned_bytes ") || strings.Contains(m, "modelfs_gpuwarm_pinned_bytes 0") {
		t.Errorf("metrics when ready:\n%s", m)
	}

	w.Unready()
	if code, _ := get(t, srv.URL+"/readyz"); code != 503 {
		t.Errorf("/readyz after Unready: %d", code)
	}
	if _, err := os.Stat(readyFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ready file after Unready: %v", err)
	}
}

// TestReadinessFailure: a failed run stays 503 and says why.
func TestReadinessFailure(t *testing.T) {
	w := New(Options{Model: filepath.Join(t.TempDir(), "missing"), Log: discard})
	defer w.Close()
	if _, err := w.Run(context.Background()); err == nil {
		t.Fatal("Run on a missing directory succeeded")
	}
	rec := httptest.NewRecorder()
	w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "failed: model directory") {
		t.Errorf("/readyz after failure: %d %q", rec.Code, rec.Body)
	}
	select {
	case <-w.Ready():
		t.Error("Ready closed after a failure")
	default:
	}
}

func TestServerEnv(t *testing.T) {
	var sh strings.Builder
	if err := WriteEnv(&sh, ServerEnv(), "shell"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(sh.String()), "\n")
	if len(lines) != 2*len(ServerEnv()) || !strings.Contains(sh.String(), "\nexport CUDA_MODULE_LOADING=LAZY\n") {
		t.Errorf("shell output:\n%s", sh.String())
	}
	for i := 0; i < len(lines); i += 2 {
		if !strings.HasPrefix(lines[i], "# ") || !strings.HasPrefix(lines[i+1], "export ") {
			t.Errorf("lines %d-%d: %q %q", i, i+1, lines[i], lines[i+1])
		}
	}
	var js strings.Builder
	if err := WriteEnv(&js, ServerEnv(), "json"); err != nil {
		t.Fatal(err)
	}
	var vars []EnvVar
	if err := json.Unmarshal([]byte(js.String()), &vars); err != nil || len(vars) != len(ServerEnv()) || vars[0].Name != "CUDA_MODULE_LOADING" || vars[0].Comment == "" {
		t.Errorf("json output %s: %v", js.String(), err)
	}
	if err := WriteEnv(io.Discard, nil, "yaml"); err == nil {
		t.Error("yaml accepted")
	}
	if got := shellQuote("it's x"); got != `'it'\''s x'` {
		t.Errorf("shellQuote: %s", got)
	}
}
