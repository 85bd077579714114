package e2e

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
)

// forwardProxy is an HTTP forward proxy on loopback that sends the
// requests it is asked to make to host to target instead, and counts
// them; a request for any other host gets 502.
type forwardProxy struct {
	srv      *httptest.Server
	requests atomic.Int64
}

func newForwardProxy(t *testing.T, host, target string) *forwardProxy {
	t.Helper()
	p := &forwardProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.Out.URL.Scheme, r.Out.URL.Host = "http", target
		r.Out.Host = r.In.Host // the client signed it
	}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Host != host {
			http.Error(w, "not proxied here", http.StatusBadGateway)
			return
		}
		p.requests.Add(1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// TestSourcesThroughAnHTTPProxy: a source is reached through the proxy
// HTTP_PROXY names, as a P2P distributor running as a proxy needs, and
// NO_PROXY sends it direct. The endpoint's host exists only for the
// proxy (.test never resolves), so a mount that went direct could not
// list it.
func TestSourcesThroughAnHTTPProxy(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	u, err := url.Parse(r.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(u.Host)
	host := "origin.modelfs.test:" + port
	proxy := newForwardProxy(t, host, u.Host)
	args := []string{"--endpoint", "http://" + host, "--region", region}

	env := append(testEnv(), "HTTP_PROXY="+proxy.srv.URL, "HTTPS_PROXY="+proxy.srv.URL, "NO_PROXY=example.invalid")
	m := startMountEnv(t, env, "s3://"+bucket+"/llama", args...)
	checkModel(t, m.dir)
	if n := proxy.requests.Load(); n == 0 {
		t.Fatal("the model was read, but not through the proxy")
	}
	m.stop(t)

	before := proxy.requests.Load()
	env = append(testEnv(), "HTTP_PROXY="+proxy.srv.URL, "HTTPS_PROXY="+proxy.srv.URL, "NO_PROXY=origin.modelfs.test")
	if _, err := tryMount(t, env, "s3://"+bucket+"/llama", append(args, "--retries", "0")...); err == nil {
		t.Fatal("a mount with its endpoint in NO_PROXY listed a host only the proxy knows")
	}
	if n := proxy.requests.Load() - before; n != 0 {
		t.Errorf("%d requests went through the proxy with the endpoint in NO_PROXY", n)
	}
}
