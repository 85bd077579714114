package s3server

import (
	"errors"
	"net/http"
	"strconv"
	"time"
)

// FaultKind names one way a request can go wrong. ServeFault injects it.
type FaultKind string

// The faults ServeFault knows. Those that cut a body short send the real
// status, headers and the first half of the real body first, so a client
// cannot tell them from a good response until the body breaks.
const (
	// FaultInternalError answers 500 InternalError, as S3 does.
	FaultInternalError FaultKind = "500"
	// FaultSlowDown answers 503 SlowDown with a Retry-After header.
	FaultSlowDown FaultKind = "503-slowdown"
	// FaultReset sends half the body, then resets the connection (TCP RST).
	FaultReset FaultKind = "reset"
	// FaultTruncated sends half the body, then closes the connection
	// cleanly: the body is shorter than its Content-Length.
	FaultTruncated FaultKind = "truncated"
	// FaultStall sends half the body, then nothing more until the client
	// gives up.
	FaultStall FaultKind = "stall"
	// FaultLatency serves the request normally after Fault.Delay, or not at
	// all if the client gives up first.
	FaultLatency FaultKind = "latency"
)

// FaultKinds returns every kind ServeFault knows, in a fixed order.
func FaultKinds() []FaultKind {
	return []FaultKind{FaultInternalError, FaultSlowDown, FaultReset, FaultTruncated, FaultStall, FaultLatency}
}

// Fault is one injected failure.
type Fault struct {
	Kind FaultKind
	// RetryAfter is the Retry-After of FaultSlowDown, in seconds.
	RetryAfter int
	// Delay is how long FaultLatency holds the response back.
	Delay time.Duration
}

var errSlowDown = newError(http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")

// ServeFault answers r with f. Call it from a Hook, which then returns
// true. The kinds that send (part of) a real response run the request
// through the server as usual, so they are authenticated and counted in
// Stats like any other; the error kinds are not. A response that is not
// a success (a failed precondition, a missing key) is sent whole: only
// object bytes are cut short. ServeFault returns once the response is
// over: for FaultStall, and FaultLatency cut short, when the client has
// given up on it (or the server is closed).
func (s *Server) ServeFault(w http.ResponseWriter, r *http.Request, f Fault) {
	switch f.Kind {
	case FaultInternalError:
		s.writeError(w, r, errInternal)
	case FaultSlowDown:
		w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
		s.writeError(w, r, errSlowDown)
	case FaultLatency:
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-r.Context().Done():
			return // nobody is waiting for an answer any more
		case <-t.C:
		}
		s.serveNormally(w, r)
	case FaultReset, FaultTruncated, FaultStall:
		s.serveNormally(&cutWriter{ResponseWriter: w, req: r, kind: f.Kind}, r)
	default:
		// An unknown kind is a bug in the caller's test: make it loud.
		s.writeError(w, r, errInternal.withMessage("s3server: unknown fault kind "+strconv.Quote(string(f.Kind))))
	}
}

func (s *Server) serveNormally(w http.ResponseWriter, r *http.Request) {
	if err := s.serve(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

// errCut stops the handler's body copy once a fault has cut it short.
var errCut = errors.New("s3server: body cut short by an injected fault")

// cutWriter passes a successful response through until half its body is
// written, then breaks it the way kind says.
type cutWriter struct {
	http.ResponseWriter
	req  *http.Request
	kind FaultKind

	limit      int64 // body bytes to let through; -1: no cut (not a success)
	written    int64
	headerSent bool
	cut        bool
}

func (c *cutWriter) WriteHeader(status int) {
	c.headerSent = true
	c.limit = -1
	if status == http.StatusOK || status == http.StatusPartialContent {
		if n, err := strconv.ParseInt(c.Header().Get("Content-Length"), 10, 64); err == nil && n > 0 {
			c.limit = n / 2
		}
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if !c.headerSent {
		c.WriteHeader(http.StatusOK) // as net/http does on a first Write
	}
	if c.cut {
		return 0, errCut
	}
	if c.limit < 0 || c.written+int64(len(p)) <= c.limit {
		n, err := c.ResponseWriter.Write(p)
		c.written += int64(n)
		return n, err
	}
	n, err := c.ResponseWriter.Write(p[:c.limit-c.written])
	c.written += int64(n)
	c.cut = true
	if err != nil {
		return n, err
	}
	// What was sent must reach the client before the connection breaks,
	// or it would see no body at all.
	rc := http.NewResponseController(c.ResponseWriter)
	_ = rc.Flush()
	switch c.kind {
	case FaultReset:
		if conn, _, err := rc.Hijack(); err == nil {
			if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
				_ = tc.SetLinger(0) // close with RST, not FIN
			}
			conn.Close()
		}
	case FaultStall:
		<-c.req.Context().Done()
	}
	// FaultTruncated: returning short makes net/http close the connection
	// once the handler is done, since the body fell short of its length.
	return n, errCut
}

// Unwrap lets http.ResponseController reach the real writer.
func (c *cutWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
