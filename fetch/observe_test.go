package fetch

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordingObserver keeps what an Observer is told.
type recordingObserver struct {
	mu       sync.Mutex
	requests []observed
	retries  map[string]int
}

type observed struct {
	op    string
	bytes int64
	d     time.Duration
	err   error
}

func (o *recordingObserver) Request(op string, bytes int64, d time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.requests = append(o.requests, observed{op, bytes, d, err})
}

func (o *recordingObserver) Retry(op string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.retries == nil {
		o.retries = map[string]int{}
	}
	o.retries[op]++
}

func (o *recordingObserver) byOp(op string) []observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []observed
	for _, r := range o.requests {
		if r.op == op {
			out = append(out, r)
		}
	}
	return out
}

func (o *recordingObserver) retriesOf(op string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.retries[op]
}

func TestObserverSeesRequestsAndRetries(t *testing.T) {
	s := newMemServer(t)
	data := testData(9000)
	s.put("w.bin", data)
	var fails atomic.Int32
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && fails.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	obs := &recordingObserver{}
	retry := testRetry()
	retry.Observer = obs
	h, err := NewHTTP(HTTPOptions{URL: s.URL + "/w.bin", Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	obj := mustList(t, h)[0]
	if got := obs.byOp(OpStat); len(got) != 1 || got[0].err != nil || got[0].bytes != 0 {
		t.Fatalf("stat requests after List = %+v, want one successful HEAD", got)
	}

	// Two 503s, then success: one request of 5000 bytes, two retries.
	fails.Store(2)
	checkRead(t, h, obj, data, 1000, 5000)
	gets := obs.byOp(OpGet)
	if len(gets) != 1 || gets[0].bytes != 5000 || gets[0].err != nil || gets[0].d <= 0 {
		t.Fatalf("get requests = %+v, want one of 5000 bytes without error", gets)
	}
	if n := obs.retriesOf(OpGet); n != 2 {
		t.Errorf("%d get retries, want 2", n)
	}

	// Failing for good: the error is reported, with no bytes, after
	// MaxAttempts-1 more retries.
	fails.Store(1 << 30)
	if _, err := h.ReadAt(context.Background(), obj, make([]byte, 10), 20); err == nil {
		t.Fatal("ReadAt succeeded against a server answering 503")
	}
	gets = obs.byOp(OpGet)
	if len(gets) != 2 || gets[1].err == nil || gets[1].bytes != 0 {
		t.Fatalf("get requests = %+v, want a second one that failed with no bytes", gets)
	}
	if n := obs.retriesOf(OpGet); n != 4 {
		t.Errorf("%d get retries, want 2 + 2", n)
	}
}

// Without an Observer nothing is reported and nothing panics.
func TestNilObserver(t *testing.T) {
	var calls int
	err := testRetry().do(context.Background(), OpGet, 1, "x", func(context.Context) error {
		calls++
		if calls < 2 {
			return transient(errTest, 0)
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("do = %v after %d calls, want success after 2", err, calls)
	}
}

var errTest = &testError{}

type testError struct{}

func (*testError) Error() string { return "test error" }
