package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelfs/modelfs/tests/azurite"
)

// TestAzure mounts az:// sources from the Azurite emulator: one emulator
// for all (it takes seconds to start), a container for each subtest. The
// account key reaches the mount in AZURE_STORAGE_KEY, as it would in use.
func TestAzure(t *testing.T) {
	needFuse(t)
	srv := azurite.Start(t)
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)
	t.Setenv("AZURE_STORAGE_SAS_TOKEN", "")
	for i, tc := range []struct {
		name string
		fn   func(*testing.T, *azureRemote)
	}{
		{"ColdReadAndMmap", testAzureColdReadAndMmap},
		{"ReplacedBlobFailsWithEIO", testAzureReplacedBlobFailsWithEIO},
		{"ContentMD5Mismatch", testAzureContentMD5Mismatch},
		{"FaultsRetried", testAzureFaultsRetried},
		{"CSIVolume", testAzureCSIVolume},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &azureRemote{srv: srv, container: fmt.Sprintf("models%d", i)}
			srv.CreateContainer(t, r.container)
			tc.fn(t, r)
		})
	}
}

type azureRemote struct {
	srv       *azurite.Server
	container string
}

// uploadModel puts every model file under prefix, each in one Put Blob,
// so the store keeps its Content-MD5.
func (r *azureRemote) uploadModel(t *testing.T, prefix string) {
	t.Helper()
	for _, name := range model.Files {
		r.srv.Put(t, r.container, prefix+name, sourceBytes(t, name))
	}
}

func (r *azureRemote) source(prefix string) string {
	return "az://" + azurite.Account + "/" + r.container + "/" + prefix
}

// Every file reads back byte for byte, cold, through read() and through
// mmap in another process, and each is verified against its Content-MD5.
func testAzureColdReadAndMmap(t *testing.T, r *azureRemote) {
	r.uploadModel(t, "llama/")
	m := startMount(t, r.source("llama"), "--endpoint", r.srv.Endpoint(), "--metrics-addr", "127.0.0.1:0")
	for _, name := range model.Files {
		if got, want := sha256File(t, m.path(name)), hexSum(sourceBytes(t, name)); got != want {
			t.Errorf("%s: sha256 through the mount %s, want %s", name, got, want)
		}
	}
	code, out, stderr := runCLIOutput(t, "stats", "--json", m.dir)
	if code != 0 {
		t.Fatalf("stats: %s", stderr)
	}
	var st struct {
		Files []struct {
			Path   string `json:"path"`
			Verify string `json:"verify"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Files) != len(model.Files) {
		t.Fatalf("stats lists %d files, want %d", len(st.Files), len(model.Files))
	}
	for _, f := range st.Files {
		if f.Verify != "verified" {
			t.Errorf("stats: %s is %q after a whole read, want verified (Content-MD5)", f.Path, f.Verify)
		}
	}
	mf := scrape(t, "http://"+metricsAddr(t, m)+"/metrics")
	if v := sum(mf, "modelfs_fetch_requests_total", map[string]string{"source": "az", "op": "get"}); v < 1 {
		t.Errorf(`modelfs_fetch_requests_total{source="az",op="get"} = %v; want the GETs counted under az`, v)
	}
	m.stop(t)

	// A fresh mount, so mmap faults start cold.
	m = startMount(t, r.source("llama/"), "--endpoint", r.srv.Endpoint())
	mm, err := exec.Command(mmapBin, "-quiet", "-order", "random", m.dir).Output()
	if err != nil {
		t.Fatalf("mmapread: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(mm)), "\n") {
		sum, name, _ := strings.Cut(line, "  ")
		if want := hexSum(sourceBytes(t, name)); sum != want {
			t.Errorf("%s: sha256 through mmap %s, want %s", name, sum, want)
		}
		checked++
	}
	if want := len(filterSafetensors(model.Files)); checked != want {
		t.Fatalf("mmapread checked %d shards, want %d:\n%s", checked, want, mm)
	}
}

func filterSafetensors(files []string) []string {
	var out []string
	for _, f := range files {
		if filepath.Ext(f) == ".safetensors" && !strings.Contains(f, "/") {
			out = append(out, f)
		}
	}
	return out
}

// A blob replaced after the mount listed it fails reads of blocks not yet
// cached with EIO; nothing of the new content is ever served.
func testAzureReplacedBlobFailsWithEIO(t *testing.T, r *azureRemote) {
	r.uploadModel(t, "")
	m := startMount(t, r.source(""), "--endpoint", r.srv.Endpoint(), "--prefetch", "off", "--block-size", "1MiB", "--retries", "2")
	name := biggest(t)
	old := sourceBytes(t, name)
	f, err := os.Open(m.path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, old[:4096]) {
		t.Fatalf("first read: %v (or wrong bytes)", err)
	}
	changed := bytes.Clone(old)
	for i := range changed {
		changed[i] ^= 0xff
	}
	r.srv.Put(t, r.container, name, changed)

	off := int64(len(old)) - 3<<20 // a block nobody has read
	n, err := f.ReadAt(make([]byte, 64<<10), off)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of an uncached block after the blob was replaced: %d bytes, %v; want EIO", n, err)
	}
	whole, _ := os.ReadFile(m.path(name))
	if !bytes.Equal(whole, old[:len(whole)]) {
		t.Fatal("bytes of two versions mixed")
	}
	if !loggedFailure(m.Log(), name, off) {
		t.Fatalf("no log line naming %s and a range holding offset %d:\n%s", name, off, m.Log())
	}
}

// A blob whose bytes do not match the Content-MD5 the store keeps fails
// with EIO once read to its end; an intact one beside it reads.
func testAzureContentMD5Mismatch(t *testing.T, r *azureRemote) {
	data := bytes.Repeat([]byte("modelfs azure md5 "), 100_000)
	r.srv.Put(t, r.container, "m/damaged.bin", data)
	r.srv.Put(t, r.container, "m/intact.bin", data)
	wrong := bytes.Repeat([]byte{0xab}, 16)
	bc := r.srv.Client(t).ServiceClient().NewContainerClient(r.container).NewBlobClient("m/damaged.bin")
	if _, err := bc.SetHTTPHeaders(context.Background(), blob.HTTPHeaders{BlobContentMD5: wrong}, nil); err != nil {
		t.Fatal(err)
	}
	props, err := bc.GetProperties(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(props.ContentMD5, wrong) {
		t.Skipf("skipping: the emulator did not keep the Content-MD5 set (%x)", props.ContentMD5)
	}
	m := startMount(t, r.source("m/"), "--endpoint", r.srv.Endpoint(), "--block-size", "1MiB")
	if got, err := os.ReadFile(m.path("damaged.bin")); !errors.Is(err, syscall.EIO) {
		t.Errorf("damaged.bin: reading it whole gave %d bytes and %v, want EIO", len(got), err)
	}
	if got, err := os.ReadFile(m.path("intact.bin")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("intact.bin: %d bytes, %v; want its %d bytes", len(got), err, len(data))
	}
	if !strings.Contains(m.Log(), "does not match the store's checksum") {
		t.Errorf("no log line about the checksum:\n%s", m.Log())
	}
}

// Resets, cut bodies and 5xx replies mid-read are retried to the right
// bytes.
func testAzureFaultsRetried(t *testing.T, r *azureRemote) {
	r.uploadModel(t, "")
	proxy := azurite.NewProxy(t, r.srv)
	var mu sync.Mutex
	gets := 0
	kinds := []azurite.Fault{azurite.FaultReset, azurite.FaultTruncate, azurite.FaultInternal, azurite.FaultBusy}
	proxy.SetChoose(func(req *http.Request) azurite.Fault {
		if req.Method != http.MethodGet || req.Header.Get("x-ms-range") == "" && req.Header.Get("Range") == "" {
			return azurite.FaultNone // the listing goes through
		}
		mu.Lock()
		defer mu.Unlock()
		gets++
		// Every other ranged GET, for the first dozen, so retries
		// (which are GETs too) get through.
		if gets%2 == 1 && gets <= 24 {
			return kinds[(gets/2)%len(kinds)]
		}
		return azurite.FaultNone
	})
	m := startMount(t, r.source(""), "--endpoint", proxy.Endpoint(), "--block-size", "1MiB", "--retries", "4")
	for _, name := range model.Files {
		if got, want := sha256File(t, m.path(name)), hexSum(sourceBytes(t, name)); got != want {
			t.Errorf("%s: sha256 through faults %s, want %s", name, got, want)
		}
	}
	if n := proxy.Faults(); n < len(kinds) {
		t.Fatalf("only %d faults injected; want every kind at least once", n)
	}
}

// An az:// volume mounts with its own account key or SAS, passed in the
// environment; the plugin's own AZURE_* variables (here a key of the same
// account) never reach a volume that brings secrets, and one that brings
// none is refused rather than given the node's identity.
func testAzureCSIVolume(t *testing.T, r *azureRemote) {
	csiEnv(t)
	r.uploadModel(t, "llama/")
	p := startCSIInProcess(t, t.TempDir())
	ctx := context.Background()
	attrs := func(extra ...string) map[string]string {
		a := map[string]string{"source": r.source("llama/"), "endpoint": r.srv.Endpoint()}
		for i := 0; i+1 < len(extra); i += 2 {
			a[extra[i]] = extra[i+1]
		}
		return a
	}
	cred, err := azblob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		t.Fatal(err)
	}
	q, err := sas.BlobSignatureValues{
		Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour), ContainerName: r.container,
		Permissions: (&sas.ContainerPermissions{Read: true, List: true}).String(),
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	token := q.Encode()
	sig := q.Signature()
	noSecret := func(what string, texts ...string) {
		t.Helper()
		for _, s := range texts {
			if strings.Contains(s, azurite.Key) || strings.Contains(s, sig) {
				t.Fatalf("an Azure credential appears in %s:\n%s", what, s)
			}
		}
	}

	// The plugin holds a key too: were it passed on, the mount would
	// have both a key and a SAS and refuse to start.
	target := filepath.Join(t.TempDir(), "sas")
	t.Cleanup(func() { // before the target's temp dir goes
		p.node.NodeUnpublishVolume(context.Background(), &csipb.NodeUnpublishVolumeRequest{VolumeId: "vol-sas", TargetPath: target})
	})
	if err := p.publish(ctx, "vol-sas", target, attrs(), map[string]string{"azureStorageSASToken": token}); err != nil {
		t.Fatalf("publishing with a SAS: %v", err)
	}
	name := biggest(t)
	if got, want := sha256File(t, filepath.Join(target, name)), hexSum(sourceBytes(t, name)); got != want {
		t.Errorf("%s through the volume: sha256 %s, want %s", name, got, want)
	}
	noSecret("the mount process's command line", procCmdline(t, mountPID(t, p.stateDir)))

	for _, c := range []struct {
		name    string
		attrs   map[string]string
		secrets map[string]string
		code    codes.Code
		want    string
	}{
		{"inline without secrets", attrs("csi.storage.k8s.io/ephemeral", "true"), nil, codes.PermissionDenied, "azureStorageKey"},
		{"wrong key", attrs(), map[string]string{"azureStorageKey": "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="}, codes.PermissionDenied, "access denied"},
		{"key and SAS", attrs(), map[string]string{"azureStorageKey": azurite.Key, "azureStorageSASToken": token}, codes.InvalidArgument, "azureStorageSASToken"},
	} {
		err := p.publish(ctx, "vol-"+strings.ReplaceAll(c.name, " ", "-"), filepath.Join(t.TempDir(), "t"), c.attrs, c.secrets)
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.want) {
			t.Errorf("%s: got %v; want %s mentioning %q", c.name, err, c.code, c.want)
		}
		if err != nil {
			noSecret("the error", err.Error())
		}
	}
	noSecret("the logs", p.log.String(), stateLogs(t, p.stateDir))
}
