package fetch

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

// loopbackDenied denies loopback, as the CSI plugin does by default.
func loopbackDenied(allow ...string) *NetPolicy {
	p := &NetPolicy{Deny: DefaultDeniedNetworks()}
	for _, a := range allow {
		p.Allow = append(p.Allow, netip.MustParsePrefix(a))
	}
	return p
}

func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestNetPolicyCheckAddr(t *testing.T) {
	p := loopbackDenied("127.0.0.1/32")
	for addr, denied := range map[string]bool{
		"169.254.169.254": true, "169.254.170.23": true, "fe80::1": true, "fd00:ec2::254": true,
		"127.0.0.2": true, "::1": true, "0.0.0.0": true, "::": true, "::ffff:169.254.169.254": true,
		"127.0.0.1": false, "10.0.0.1": false, "52.216.0.1": false, "2600::1": false,
	} {
		err := p.CheckAddr(netip.MustParseAddr(addr))
		if (err != nil) != denied || (err != nil && !errors.Is(err, ErrNetDenied)) {
			t.Errorf("CheckAddr(%s) = %v, want denied %v", addr, err, denied)
		}
	}
	if err := (*NetPolicy)(nil).CheckAddr(netip.MustParseAddr("169.254.169.254")); err != nil {
		t.Errorf("a nil policy denied: %v", err)
	}
	nets, err := ParseNetworks(" 10.0.0.0/8, fd00::1 ,127.0.0.1")
	if err != nil || FormatNetworks(nets) != "10.0.0.0/8,fd00::1/128,127.0.0.1/32" {
		t.Errorf("ParseNetworks: %v %v", nets, err)
	}
	if _, err := ParseNetworks("10.0.0.0/8,metadata"); err == nil {
		t.Error("ParseNetworks accepted a name")
	}
}

// A name that resolves to a denied address is refused when dialled (no
// request reaches the server), not retried, and reported as an access
// error, for HTTP and S3 sources alike.
func TestNetPolicyDeniesAtDial(t *testing.T) {
	srv, hits := countingServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("metadata")) })
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	byName := "http://localhost:" + port
	ctx := context.Background()
	retry := RetryOptions{MaxAttempts: 3}

	h, err := NewHTTP(HTTPOptions{URL: byName + "/latest/meta-data", Net: loopbackDenied(), Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.List(ctx)
	if !errors.Is(err, ErrNetDenied) || !errors.Is(err, ErrAccess) || strings.Contains(err.Error(), "giving up") {
		t.Fatalf("HTTP list through a denied name: %v; want a denial, not retried", err)
	}

	s, err := Open(ctx, Location{Scheme: "s3", Bucket: "models"}, OpenOptions{
		S3: S3Options{Endpoint: byName, Region: "us-east-1", NoSignRequest: true}, Retry: retry, Net: loopbackDenied(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = s.List(ctx); !errors.Is(err, ErrNetDenied) {
		t.Fatalf("S3 list through a denied endpoint: %v; want a denial", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests reached the denied server", n)
	}

	// Allowed, the same source works.
	h, err = NewHTTP(HTTPOptions{URL: byName + "/latest/meta-data", Net: loopbackDenied("127.0.0.0/8", "::1/128"), Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.List(ctx); err != nil {
		t.Fatalf("HTTP list through an allowed network: %v", err)
	}
}

// A redirect from an allowed server to a denied address is not followed.
func TestNetPolicyRedirect(t *testing.T) {
	inner := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) })}
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var innerHits atomic.Int32
	inner.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { innerHits.Add(1); w.Write([]byte("secret")) })
	go inner.Serve(ln)
	t.Cleanup(func() { inner.Close() })
	outer, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+ln.Addr().String()+"/latest/meta-data", http.StatusFound)
	})
	h, err := NewHTTP(HTTPOptions{URL: outer.URL + "/model.bin", Net: loopbackDenied("127.0.0.1/32"), Retry: RetryOptions{MaxAttempts: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.List(context.Background()); !errors.Is(err, ErrNetDenied) {
		t.Fatalf("list through a redirect to a denied address: %v; want a denial", err)
	}
	if n := innerHits.Load(); n != 0 {
		t.Fatalf("the redirect was followed (%d requests)", n)
	}
}
