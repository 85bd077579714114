package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/tests/linkproxy"
	"github.com/modelfs/modelfs/tests/mountproc"
	"github.com/modelfs/modelfs/tests/s3server"
)

// tlsServer serves a test S3 server over HTTPS with a fresh bench CA,
// behind the link proxy when link is enabled, and returns its endpoint.
func tlsServer(t *testing.T, link linkproxy.Options) (*s3server.Server, *benchPKI, string) {
	t.Helper()
	dir := t.TempDir()
	pki, err := newBenchPKI(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := s3server.New(s3server.Options{Dir: filepath.Join(dir, "s3"), AccessKey: accessKey, SecretKey: secretKey, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	scheme, addr, stop, err := serveS3(srv, pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if scheme != "https" {
		t.Fatalf("scheme %q with a certificate", scheme)
	}
	if link.Enabled() {
		p, err := linkproxy.Start("127.0.0.1:0", addr, link)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		addr = p.Addr()
	}
	if err := srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	return srv, pki, "https://" + addr
}

// The bench's HTTPS endpoint, through the link proxy: a client trusting
// the run's CA reads an object; one trusting only the system's does not
// get past the handshake; HTTP/2 is not offered, as S3 does not.
func TestTLSEndpoint(t *testing.T) {
	srv, pki, ep := tlsServer(t, linkproxy.Options{RTT: 2 * time.Millisecond})
	want := bytes.Repeat([]byte("modelfs "), 1<<16)
	if _, err := srv.PutObject(bucket, prefix+"a.bin", want); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	get := func(c *s3.Client) ([]byte, error) {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + "a.bin")})
		if err != nil {
			return nil, err
		}
		defer out.Body.Close()
		return io.ReadAll(out.Body)
	}
	got, err := get(newS3Client(ep, region, accessKey, secretKey, pki.Roots))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("GET over HTTPS: %d bytes, %v", len(got), err)
	}
	if _, err := get(newS3Client(ep, region, accessKey, secretKey, nil)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the bench CA: %v, want a certificate error", err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Roots}, ForceAttemptHTTP2: true}}
	resp, err := hc.Get(ep + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/1.1" {
		t.Errorf("negotiated %s, want HTTP/1.1", resp.Proto)
	}
}

// Each installed peer mounts a prefix of the test S3 server over HTTPS,
// trusting the bench CA the way the bench tells it to, lists it and reads
// an object whole and at an offset: the S3 dialect the server speaks
// (path-style, SigV4, its listings) is one these clients accept.
func TestPeerMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("peer mounts need root (FUSE without allow_other setup); not root here")
	}
	mountproc.SkipWithoutFuse(t)
	srv, pki, ep := tlsServer(t, linkproxy.Options{})
	want := make([]byte, 5<<20+12345)
	for i := range want {
		want[i] = byte(i*7 + i>>13)
	}
	for _, key := range []string{"model.safetensors", "sub/config.json"} {
		if _, err := srv.PutObject(bucket, prefix+key, want); err != nil {
			t.Fatal(err)
		}
	}
	var tools []string
	for _, tool := range allPeerTools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Logf("%s: not installed, not checked (make bench-peers)", tool)
			continue
		}
		tools = append(tools, tool)
	}
	if len(tools) == 0 {
		t.Skip("no peer installed (make bench-peers installs s3fs and rclone)")
	}
	b := &bench{cache: t.TempDir(), endpoint: ep, pki: pki}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(caEnv, name)
	})
	for _, tool := range tools {
		for _, mode := range peerModes(tool) {
			t.Run(mode.Name, func(t *testing.T) {
				mnt, cache := t.TempDir(), t.TempDir()
				argv, extra := b.peerCommand(mode, prefix, mnt, cache)
				for _, a := range argv {
					if strings.Contains(a, secretKey) {
						t.Fatalf("the secret key is in argv: %q", argv)
					}
				}
				mp, err := startPeerMount(context.Background(), argv, append(slices.Clone(env), extra...), mnt)
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					if _, err := mp.stop(); err != nil {
						t.Error(err)
					}
					if mounted(mnt) {
						t.Errorf("%s still mounted after stop", mnt)
					}
				}()
				ents, err := os.ReadDir(mnt)
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				if !slices.Equal(names, []string{"model.safetensors", "sub"}) {
					t.Errorf("listing %v", names)
				}
				got, err := os.ReadFile(filepath.Join(mnt, "sub", "config.json"))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("whole read: %d bytes (want %d), %v", len(got), len(want), err)
				}
				if err := readAt(filepath.Join(mnt, "model.safetensors"), want, 3<<20+17); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func readAt(path string, want []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	got := make([]byte, 1<<20)
	n, err := f.ReadAt(got, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if !bytes.Equal(got[:n], want[off:off+int64(n)]) || n != len(got) {
		return fmt.Errorf("read at %d: %d bytes, differing from the object", off, n)
	}
	return nil
}
