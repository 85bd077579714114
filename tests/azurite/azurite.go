package azurite

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
)

// The emulator's well-known development account and key.
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Server is a running azurite-blob.
type Server struct {
	// URL is the blob service root (http://127.0.0.1:PORT); Endpoint
	// adds the account, as clients address it.
	URL string
}

// Endpoint is the account's blob service URL.
func (s *Server) Endpoint() string { return s.URL + "/" + Account }

var listening = regexp.MustCompile(`successfully listens on (http://127\.0\.0\.1:[0-9]+)`)

// Start runs azurite-blob until the test ends, or skips the test when it
// is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("azurite-blob")
	if err != nil {
		tb.Skip("skipping: azurite-blob is not installed (npm install -g azurite@3.37.0; .ci/install-deps does)")
	}
	// Port 0: the emulator picks a free port and prints it, so there is
	// no race for a port chosen beforehand.
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
		"--skipApiVersionCheck", "--loose", "--silent")
	cmd.Dir = tb.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting azurite-blob: %v", err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() {
		// Its process group: node may have children.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	found := make(chan string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	select {
	case u := <-found:
		return &Server{URL: u}
	case <-done:
		tb.Fatalf("azurite-blob exited before listening\n%s", stderr.String())
	case <-time.After(60 * time.Second):
		tb.Fatalf("azurite-blob not listening after 60s\n%s", stderr.String())
	}
	return nil
}

// Client is an SDK client of the account, signed with its key.
func (s *Server) Client(tb testing.TB) *azblob.Client {
	tb.Helper()
	cred, err := azblob.NewSharedKeyCredential(Account, Key)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := azblob.NewClientWithSharedKeyCredential(s.Endpoint()+"/", cred, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// CreateContainer makes a container.
func (s *Server) CreateContainer(tb testing.TB, name string) {
	tb.Helper()
	if _, err := s.Client(tb).CreateContainer(context.Background(), name, nil); err != nil {
		tb.Fatalf("creating container %s: %v", name, err)
	}
}

// Put uploads data as one blob (one Put Blob, so the store keeps its
// Content-MD5).
func (s *Server) Put(tb testing.TB, container, name string, data []byte) {
	tb.Helper()
	if _, err := s.Client(tb).UploadBuffer(context.Background(), container, name, data, nil); err != nil {
		tb.Fatalf("uploading %s: %v", name, err)
	}
}
