package gcsemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Module is the emulator's module and version, as go install takes it.
const Module = "github.com/fsouza/fake-gcs-server@v1.56.1"

// Binary returns the emulator's executable, building it the first time
// on this machine into the user's cache directory. A lock keeps the test
// binaries that go test runs in parallel from building it twice.
func Binary() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "modelfs-tests", strings.NewReplacer("/", "_", "@", "_").Replace(Module))
	bin := filepath.Join(dir, "fake-gcs-server")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built while we waited for the lock
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", Module)
	// Outside any module: the emulator's own go.mod decides its
	// dependencies, not the project's.
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", Module, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "fake-gcs-server"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// Options configure an emulator.
type Options struct {
	// Dir selects the filesystem backend, rooted there: each object is a
	// plain file (ObjectPath) whose bytes a test can change under the
	// metadata the emulator keeps. "" keeps everything in memory.
	Dir string
}

// FaultKind is a way an object read goes wrong.
type FaultKind string

const (
	// Fault503 answers 503 with Retry-After: 0.
	Fault503 FaultKind = "503"
	// FaultTruncated sends the real headers and half the body, then closes
	// the connection: the body is shorter than its Content-Length.
	FaultTruncated FaultKind = "truncated"
	// FaultReset sends the real headers and half the body, then resets the
	// connection.
	FaultReset FaultKind = "reset"
	// Fault403 answers 403 Forbidden, which is not retried.
	Fault403 FaultKind = "403"
)

// Emulator is a running fake-gcs-server behind a fault-injecting proxy.
type Emulator struct {
	// URL is the proxy's base URL, what sources use as their endpoint.
	URL string
	// Direct is the emulator's own base URL, without the proxy.
	Direct string
	dir    string

	mu       sync.Mutex
	faults   []FaultKind // applied to the next object reads, in order
	upFaults []FaultKind // applied to the next upload chunks, in order
	chunks   int         // upload chunks that reached the proxy
	reads    int         // object reads that reached the proxy
	requests int
	bearer   map[string]int // bearer tokens seen, by value
}

// Start builds (once) and starts an emulator on a free loopback port,
// with its proxy; both stop when t ends.
func Start(t testing.TB, opts Options) *Emulator {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("building the Cloud Storage emulator: %v", err)
	}
	addr := freeAddr(t)
	args := []string{"-scheme", "http", "-host", "127.0.0.1", "-port", addr[strings.LastIndex(addr, ":")+1:],
		"-public-host", addr, "-external-url", "http://" + addr, "-log-level", "error"}
	if opts.Dir != "" {
		args = append(args, "-backend", "filesystem", "-filesystem-root", opts.Dir)
	} else {
		args = append(args, "-backend", "memory")
	}
	cmd := exec.Command(bin, args...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	e := &Emulator{Direct: "http://" + addr, dir: opts.Dir, bearer: map[string]int{}}
	if err := waitHealthy(e.Direct, exited); err != nil {
		t.Fatalf("Cloud Storage emulator: %v\n%s", err, logs.String())
	}
	target, _ := url.Parse(e.Direct)
	rp := &httputil.ReverseProxy{
		Rewrite:  func(r *httputil.ProxyRequest) { r.SetURL(target) },
		ErrorLog: log.New(io.Discard, "", 0),
		// An upload session is named by a URL on the emulator's own
		// address: pointed back at the proxy, its chunks are counted
		// and can fail too.
		ModifyResponse: func(resp *http.Response) error {
			if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, e.Direct+"/") {
				resp.Header.Set("Location", e.URL+strings.TrimPrefix(loc, e.Direct))
			}
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f, ok := e.next(r); ok {
			e.serveFault(w, r, f, target)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.URL = srv.URL
	return e
}

// freeAddr returns a loopback address no one listens on just now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHealthy polls the emulator's health check until it answers,
// it exits, or 60 s pass: a process of its own has nothing to wait on.
func waitHealthy(base string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(base + "/_internal/healthcheck")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after 60s: %v", err)
		}
		select {
		case <-exited:
			return errors.New("exited before it was healthy")
		case <-tick.C:
		}
	}
}

// isRead reports whether r reads object bytes: an XML API GET
// (/bucket/object) or a JSON API media download.
func isRead(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	if strings.HasPrefix(r.URL.Path, "/download/") || r.URL.Query().Get("alt") == "media" {
		return true
	}
	return !strings.HasPrefix(r.URL.Path, "/storage/") && !strings.HasPrefix(r.URL.Path, "/upload/") &&
		!strings.HasPrefix(r.URL.Path, "/_internal/") && strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1
}

// next counts r and returns the fault it gets, if any.
func (e *Emulator) next(r *http.Request) (FaultKind, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests++
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		e.bearer[tok]++
	}
	if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/upload/") {
		e.chunks++
		if len(e.upFaults) == 0 {
			return "", false
		}
		f := e.upFaults[0]
		e.upFaults = e.upFaults[1:]
		return f, f != "" // "": this chunk goes through
	}
	if !isRead(r) {
		return "", false
	}
	e.reads++
	if len(e.faults) == 0 {
		return "", false
	}
	f := e.faults[0]
	e.faults = e.faults[1:]
	return f, true
}

func (e *Emulator) serveFault(w http.ResponseWriter, r *http.Request, f FaultKind, target *url.URL) {
	switch f {
	case Fault503:
		w.Header().Set("Retry-After", "0")
		http.Error(w, `{"error":{"code":503,"message":"injected"}}`, http.StatusServiceUnavailable)
		return
	case Fault403:
		http.Error(w, `{"error":{"code":403,"message":"injected"}}`, http.StatusForbidden)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI, out.Host = "", ""
	out.URL.Scheme, out.URL.Host = target.Scheme, target.Host
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	if resp.StatusCode/100 == 2 && resp.ContentLength > 1 {
		io.CopyN(w, resp.Body, resp.ContentLength/2)
	} else {
		io.Copy(w, resp.Body)
		return
	}
	rc := http.NewResponseController(w)
	rc.Flush()
	conn, _, err := rc.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok && f == FaultReset {
		tc.SetLinger(0) // RST, not FIN
	}
	conn.Close()
}

// FailReads makes the next object reads fail, one fault each, in order.
func (e *Emulator) FailReads(faults ...FaultKind) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, faults...)
}

// FailUploads makes the next chunks of resumable uploads (PUTs to an
// upload session) fail, one fault each, in order; a "" lets its chunk
// through. Only Fault503 and Fault403 apply to uploads.
func (e *Emulator) FailUploads(faults ...FaultKind) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.upFaults = append(e.upFaults, faults...)
}

// UploadChunks is how many chunks of resumable uploads went through the
// proxy.
func (e *Emulator) UploadChunks() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.chunks
}

// PendingFaults is how many faults FailReads queued that no read has hit.
func (e *Emulator) PendingFaults() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.faults)
}

// Reads is how many object reads went through the proxy.
func (e *Emulator) Reads() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reads
}

// Requests is how many requests went through the proxy.
func (e *Emulator) Requests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests
}

// BearerTokens returns how many requests carried each bearer token.
func (e *Emulator) BearerTokens() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.bearer))
	for k, v := range e.bearer {
		out[k] = v
	}
	return out
}

// call sends one JSON API request to the emulator itself, not through
// the proxy, and decodes its reply into out unless out is nil.
func (e *Emulator) call(method, path string, query url.Values, body []byte, out any) error {
	req, err := http.NewRequest(method, e.Direct+path+"?"+query.Encode(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// CreateBucket creates a bucket.
func (e *Emulator) CreateBucket(t testing.TB, name string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name})
	req, err := http.NewRequest(http.MethodPost, e.Direct+"/storage/v1/b?project=test-project", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("creating bucket %s: %s: %s", name, resp.Status, b)
	}
}

// Put uploads data as bucket/name in one request and returns the
// object's new generation.
func (e *Emulator) Put(t testing.TB, bucket, name string, data []byte) int64 {
	t.Helper()
	var attrs struct {
		Generation int64 `json:"generation,string"`
	}
	if data == nil {
		data = []byte{}
	}
	err := e.call(http.MethodPost, "/upload/storage/v1/b/"+url.PathEscape(bucket)+"/o",
		url.Values{"uploadType": {"media"}, "name": {name}}, data, &attrs)
	if err != nil {
		t.Fatalf("uploading %s: %v", name, err)
	}
	return attrs.Generation
}

// PutFile uploads a local file as bucket/name.
func (e *Emulator) PutFile(t testing.TB, bucket, name, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return e.Put(t, bucket, name, data)
}

// Delete deletes bucket/name.
func (e *Emulator) Delete(t testing.TB, bucket, name string) {
	t.Helper()
	if err := e.call(http.MethodDelete, "/storage/v1/b/"+url.PathEscape(bucket)+"/o/"+url.PathEscape(name), nil, nil, nil); err != nil {
		t.Fatalf("deleting %s: %v", name, err)
	}
}

// ObjectPath is where the filesystem backend keeps bucket/name's bytes.
func (e *Emulator) ObjectPath(bucket, name string) string {
	if e.dir == "" {
		panic("gcsemu: ObjectPath needs Options.Dir")
	}
	return filepath.Join(e.dir, url.PathEscape(bucket), filepath.FromSlash(name))
}

// String names the emulator for messages.
func (e *Emulator) String() string {
	return "fake-gcs-server at " + e.Direct + " (proxy " + e.URL + ")"
}
