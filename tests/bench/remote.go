package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/modelfs/modelfs/tests/linkproxy"
	"github.com/modelfs/modelfs/tests/mountproc"
	"github.com/modelfs/modelfs/tests/s3server"
)

// The remote side — the s3server package and the link proxy — runs in a
// child process of this binary rather than in the bench process itself,
// for two reasons:
//
//   - Deadlock. A goroutine touching an mmapped page of the mount blocks
//     inside a page fault, which Go cannot preempt; if the garbage
//     collector then stops the world, it waits for that fault, the fault
//     waits for modelfs, modelfs waits for a GET, and the GET is served by
//     goroutines the stopped world will not run. Each such stall lasts
//     until modelfs's request timeout: a 2 GiB mmap pass took minutes.
//   - Accounting. On a 2-core machine the server, the mount and the reader
//     compete for CPU; in separate processes each one's CPU time can be
//     read from /proc, which is what explains a cold throughput figure.

const remoteChildArg = "remote-child"

// remoteReady is the line the child prints on stdout once it is serving.
type remoteReady struct {
	S3       string `json:"s3"`       // the S3 server itself
	Endpoint string `json:"endpoint"` // what clients use: the proxy, if any
	Control  string `json:"control"`
}

// runRemoteChild is the child's main: serve until stdin is closed (which
// also happens if the parent dies).
func runRemoteChild(args []string) error {
	fs := flag.NewFlagSet(remoteChildArg, flag.ContinueOnError)
	dir := fs.String("dir", "", "server object directory")
	rate := fs.Float64("rate-bits", 0, "link rate, bits/s")
	connRate := fs.Float64("conn-rate-bits", 0, "each connection's rate, bits/s")
	rtt := fs.Duration("rtt", 0, "link round-trip time")
	certFile := fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM)")
	keyFile := fs.String("tls-key", "", "and this key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, err := s3server.New(s3server.Options{Dir: *dir, AccessKey: accessKey, SecretKey: secretKey, Region: region})
	if err != nil {
		return err
	}
	scheme, addr, stop, err := serveS3(srv, *certFile, *keyFile)
	if err != nil {
		return err
	}
	defer stop()
	ready := remoteReady{S3: scheme + "://" + addr, Endpoint: scheme + "://" + addr}
	if link := (linkproxy.Options{RateBitsPerSec: *rate, ConnBitsPerSec: *connRate, RTT: *rtt}); link.Enabled() {
		p, err := linkproxy.Start("127.0.0.1:0", addr, link)
		if err != nil {
			return err
		}
		defer p.Close()
		ready.Endpoint = scheme + "://" + p.Addr()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("control listener: %w", err)
	}
	ctl := &http.Server{Handler: controlHandler(srv, *dir), ReadHeaderTimeout: time.Minute}
	go ctl.Serve(ln)
	defer ctl.Close()
	ready.Control = "http://" + ln.Addr().String()
	b, _ := json.Marshal(ready)
	fmt.Printf("%s\n", b)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// serveS3 serves srv on a loopback port, over HTTPS with the certificate
// and key given (both PEM files) or plain HTTP without, and returns the
// scheme, the address and how to stop it.
func serveS3(srv *s3server.Server, certFile, keyFile string) (scheme, addr string, stop func(), err error) {
	if certFile == "" {
		if err := srv.Start("127.0.0.1:0"); err != nil {
			return "", "", nil, fmt.Errorf("starting the S3 server: %w", err)
		}
		return "http", strings.TrimPrefix(srv.URL(), "http://"), func() { srv.Close() }, nil
	}
	// The TLS session ends in the server, not in the link proxy: the link
	// carries ciphertext, as a real one does.
	cfg, err := serverTLSConfig(certFile, keyFile)
	if err != nil {
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, fmt.Errorf("starting the S3 server: %w", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: time.Minute, TLSConfig: cfg,
		// Non-nil and empty: no HTTP/2, as with S3.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(tls.NewListener(ln, cfg)) // http.ErrServerClosed after Close
	}()
	return "https", ln.Addr().String(), func() { hs.Close(); <-done }, nil
}

// controlHandler lets the parent load objects and read the counters.
func controlHandler(srv *s3server.Server, dir string) http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /bucket", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, srv.CreateBucket(r.URL.Query().Get("name")))
	})
	mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		_, err := srv.PutObjectFromFile(q.Get("bucket"), q.Get("key"), q.Get("path"))
		reply(w, struct{}{}, err)
	})
	mux.HandleFunc("POST /warm", func(w http.ResponseWriter, r *http.Request) {
		n, err := warmDir(dir)
		reply(w, n, err)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, srv.Stats(), nil)
	})
	return mux
}

// remoteProc is the parent's handle on the child.
type remoteProc struct {
	remoteReady
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
	log   *mountproc.Log
}

// startRemote starts the child serving objects from dir, over HTTPS with
// pki's certificate when pki is not nil.
func startRemote(dir string, link linkproxy.Options, pki *benchPKI) (*remoteProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the bench binary: %w", err)
	}
	args := []string{remoteChildArg, "-dir", dir, "-rate-bits", fmt.Sprint(link.RateBitsPerSec),
		"-conn-rate-bits", fmt.Sprint(link.ConnBitsPerSec), "-rtt", link.RTT.String()}
	if pki != nil {
		args = append(args, "-tls-cert", pki.CertFile, "-tls-key", pki.KeyFile)
	}
	cmd := exec.Command(self, args...)
	r := &remoteProc{cmd: cmd, done: make(chan error, 1), log: &mountproc.Log{Max: 16 << 10}}
	cmd.Stderr = r.log
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the S3 server process: %w", err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, stdout)
		r.done <- cmd.Wait()
	}()
	select {
	case l, ok := <-line:
		if ok && json.Unmarshal([]byte(l), &r.remoteReady) == nil && r.Control != "" {
			return r, nil
		}
		r.Close()
		return nil, fmt.Errorf("the S3 server process did not start: %q\n%s", l, r.log)
	case <-time.After(30 * time.Second):
		r.Close()
		return nil, fmt.Errorf("the S3 server process did not start within 30s\n%s", r.log)
	}
}

func (r *remoteProc) pid() int { return r.cmd.Process.Pid }

// Close ends the child by closing its stdin.
func (r *remoteProc) Close() error {
	r.stdin.Close()
	select {
	case err := <-r.done:
		if err != nil {
			return fmt.Errorf("S3 server process: %v\n%s", err, r.log)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		return errors.New("S3 server process did not exit within 30s; killed")
	}
}

func (r *remoteProc) call(ctx context.Context, method, path string, q url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, r.Control+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("S3 server process: %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("S3 server process: %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("S3 server process: %s: %s", path, strings.TrimSpace(string(body)))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

func (r *remoteProc) createBucket(ctx context.Context, name string) error {
	return r.call(ctx, http.MethodPost, "/bucket", url.Values{"name": {name}}, nil)
}

func (r *remoteProc) putFile(ctx context.Context, bucket, key, path string) error {
	return r.call(ctx, http.MethodPost, "/put", url.Values{"bucket": {bucket}, "key": {key}, "path": {path}}, nil)
}

// warm has the child read its object files, and returns the bytes read.
func (r *remoteProc) warm(ctx context.Context) (int64, error) {
	var n int64
	err := r.call(ctx, http.MethodPost, "/warm", nil, &n)
	return n, err
}

func (r *remoteProc) stats(ctx context.Context) (s3server.Stats, error) {
	var s s3server.Stats
	err := r.call(ctx, http.MethodGet, "/stats", nil, &s)
	return s, err
}
