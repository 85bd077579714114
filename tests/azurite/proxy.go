package azurite

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
)

// Fault is one way a request through Proxy goes wrong.
type Fault string

// The faults Proxy injects. Those that cut a body short send the real
// status, headers and first half of the body first.
const (
	FaultNone     Fault = ""
	FaultInternal Fault = "500"       // 500 InternalError, as the service sends
	FaultBusy     Fault = "503"       // 503 ServerBusy with Retry-After: 0
	FaultDenied   Fault = "403"       // 403 AuthorizationFailure, not retried
	FaultReset    Fault = "reset"     // half the body, then a TCP reset
	FaultTruncate Fault = "truncated" // half the body, then a clean close
)

// Proxy forwards to an emulator, injecting the fault Choose returns for
// each request.
type Proxy struct {
	// URL is the proxy's root; Endpoint adds the account.
	URL string

	mu     sync.Mutex
	choose func(*http.Request) Fault
	faults int
}

// Endpoint is the account's blob service URL through the proxy.
func (p *Proxy) Endpoint() string { return p.URL + "/" + Account }

// SetChoose sets what decides each request's fault (nil: none).
func (p *Proxy) SetChoose(f func(*http.Request) Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.choose = f
}

// Faults is how many faults the proxy has injected.
func (p *Proxy) Faults() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// NewProxy serves on loopback until the test ends.
func NewProxy(tb testing.TB, s *Server) *Proxy {
	tb.Helper()
	target, err := url.Parse(s.URL)
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // cut bodies are the point
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		f := FaultNone
		if p.choose != nil {
			f = p.choose(r)
		}
		if f != FaultNone {
			p.faults++
		}
		p.mu.Unlock()
		switch f {
		case FaultInternal:
			writeError(w, http.StatusInternalServerError, "InternalError")
		case FaultDenied:
			writeError(w, http.StatusForbidden, "AuthorizationFailure")
		case FaultBusy:
			w.Header().Set("Retry-After", "0")
			writeError(w, http.StatusServiceUnavailable, "ServerBusy")
		case FaultReset, FaultTruncate:
			rp.ServeHTTP(&cutWriter{ResponseWriter: w, kind: f}, r)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	tb.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func writeError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>`+code+`</Code><Message>injected</Message></Error>`)
}

// cutWriter passes a response through until half its body is written,
// then cuts the connection.
type cutWriter struct {
	http.ResponseWriter
	kind      Fault
	limit     int64 // -1: not a body to cut
	written   int64
	cut       bool
	gotHeader bool
}

func (c *cutWriter) WriteHeader(status int) {
	c.gotHeader = true
	c.limit = -1
	if n, err := strconv.ParseInt(c.Header().Get("Content-Length"), 10, 64); err == nil && status/100 == 2 && n > 1 {
		c.limit = n / 2
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if !c.gotHeader {
		c.WriteHeader(http.StatusOK)
	}
	if c.cut {
		return 0, net.ErrClosed
	}
	if c.limit < 0 || c.written+int64(len(b)) <= c.limit {
		c.written += int64(len(b))
		return c.ResponseWriter.Write(b)
	}
	n, _ := c.ResponseWriter.Write(b[:c.limit-c.written])
	c.written += int64(n)
	c.cut = true
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if hj, ok := c.ResponseWriter.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok && c.kind == FaultReset {
				tc.SetLinger(0) // close with RST, not FIN
			}
			conn.Close()
		}
	}
	return n, net.ErrClosed
}
