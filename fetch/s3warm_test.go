package fetch

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfs/modelfs/tests/s3server"
)

// WarmConns leaves n connections open in the client's pool, and reads
// that come after it, n at once, open none of their own: none of them
// pays a handshake.
func TestWarmConnsOpensConnectionsReadsReuse(t *testing.T) {
	const key, secret, n = "AKIDWARM", "warm-secret", 4
	store, err := s3server.New(s3server.Options{Dir: t.TempDir(), AccessKey: key, SecretKey: secret})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateBucket("bucket"); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	if _, err := store.PutObject("bucket", "w", data); err != nil {
		t.Fatal(err)
	}
	// Each request is held until n are in flight, so that n connections
	// are needed at once, however fast the server answers.
	var (
		mu      sync.Mutex
		hold    = true
		arrived int
		heads   int
		all     = make(chan struct{})
	)
	holdNext := func(on bool) {
		mu.Lock()
		hold, arrived, all = on, 0, make(chan struct{})
		mu.Unlock()
	}
	store.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		if r.Method == http.MethodHead {
			heads++
		}
		if !hold {
			mu.Unlock()
			return false
		}
		arrived++
		ch := all
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
		}
		return false
	})
	var conns atomic.Int64
	ts := httptest.NewUnstartedServer(store.Handler())
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)

	onlyEnvKeys(t, key, secret)
	ctx := context.Background()
	src, err := NewS3(ctx, S3Options{Bucket: "bucket", Endpoint: ts.URL, MaxConns: 2 * n})
	if err != nil {
		t.Fatal(err)
	}
	src.WarmConns(ctx, n)
	if got := conns.Load(); got != n {
		t.Fatalf("WarmConns(%d) opened %d connections", n, got)
	}
	mu.Lock()
	if heads != n {
		t.Errorf("WarmConns(%d) sent %d HEAD requests", n, heads)
	}
	mu.Unlock()

	holdNext(false)
	obj, err := src.Stat(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	holdNext(true)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p := make([]byte, len(data)/n)
			if _, err := src.ReadAt(ctx, obj, p, int64(i*len(p))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := conns.Load(); got != n {
		t.Errorf("%d reads at once after WarmConns(%d) opened %d more connections", n, n, got-n)
	}
}
