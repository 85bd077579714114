package fetch

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/modelfs/modelfs/tests/azurite"
)

func TestAzureLocation(t *testing.T) {
	for _, tc := range []struct {
		raw                        string
		account, container, prefix string
		scheme                     string
		wantErr                    string
	}{
		{raw: "az://acct1/models/llama/", scheme: "az", account: "acct1", container: "models", prefix: "llama/"},
		{raw: "AZ://acct1/models", scheme: "az", account: "acct1", container: "models"},
		{raw: "az://devstoreaccount1/$root/x", scheme: "az", account: "devstoreaccount1", container: "$root", prefix: "x"},
		{raw: "https://acct1.blob.core.windows.net/models/llama", scheme: "az", account: "acct1", container: "models", prefix: "llama"},
		{raw: "https://ACCT1.blob.core.windows.net:443/models", scheme: "az", account: "acct1", container: "models"},
		// Other hosts, and plain http, stay the HTTP source.
		{raw: "https://acct1.blob.core.windows.net.example.com/models", scheme: "https"},
		{raw: "http://acct1.blob.core.windows.net/models", scheme: "http"},
		{raw: "az://acct1", wantErr: "container name is empty"},
		{raw: "az://acct1/", wantErr: "container name is empty"},
		{raw: "az://Acct1/models", wantErr: "storage account name"},
		{raw: "az://ab/models", wantErr: "storage account name"},
		{raw: "az://acct1/Models", wantErr: "container name"},
		{raw: "az://acct1/a--b", wantErr: "container name"},
		{raw: "az://acct1/models/../etc", wantErr: `".." segment`},
		{raw: "https://acct1.blob.core.windows.net/models?sv=2024&sig=SECRETSIG", wantErr: "AZURE_STORAGE_SAS_TOKEN"},
		{raw: "https://user:pw@acct1.blob.core.windows.net/models", wantErr: "credentials"},
		{raw: "https://acct1.blob.core.windows.net/", wantErr: "container name is empty"},
		{raw: "az://acct1/models/x?sv=2024&sig=SECRETSIG", wantErr: "AZURE_STORAGE_SAS_TOKEN"},
	} {
		loc, err := ParseLocation(tc.raw)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseLocation(%q) = %+v, %v; want error containing %q", tc.raw, loc, err, tc.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), "SECRETSIG") || strings.Contains(err.Error(), "pw@")) {
				t.Errorf("ParseLocation(%q): error quotes a secret: %v", tc.raw, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseLocation(%q): %v", tc.raw, err)
			continue
		}
		if loc.Scheme != tc.scheme || loc.Scheme == "az" && (loc.Account != tc.account || loc.Bucket != tc.container || loc.Prefix != tc.prefix) {
			t.Errorf("ParseLocation(%q) = %+v; want %s %s/%s/%s", tc.raw, loc, tc.scheme, tc.account, tc.container, tc.prefix)
		}
	}
}

// azEnv is an environment with nothing in it.
func azEnv(vars ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(vars); i += 2 {
			if vars[i] == k {
				return vars[i+1]
			}
		}
		return ""
	}
}

// TestAzure runs the Azure source against the emulator, one emulator for
// all (it takes seconds to start), a container for each subtest.
func TestAzure(t *testing.T) {
	srv := azurite.Start(t)
	for i, tc := range []struct {
		name string
		fn   func(*testing.T, *azFixture)
	}{
		{"ListReadPinned", testAzureListReadPinned}, {"SingleBlobPrefix", testAzureSingleBlobPrefix},
		{"ReplacedBlobFails", testAzureReplacedBlobFails}, {"RefusedCredentials", testAzureRefusedCredentials},
		{"SAS", testAzureSAS}, {"Open", testAzureOpen}, {"MissingContainer", testAzureMissingContainer},
		{"NetPolicy", testAzureNetPolicy}, {"FaultsRetried", testAzureFaultsRetried},
		{"VersionIDsPinReads", testAzureVersionIDsPinReads},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newAzFixture(t, srv, fmt.Sprintf("models%d", i))) })
	}
}

// azFixture is an emulator with a container holding a few blobs.
type azFixture struct {
	srv       *azurite.Server
	container string
	files     map[string][]byte // by key under the prefix "model/"
}

func newAzFixture(t *testing.T, srv *azurite.Server, container string) *azFixture {
	t.Helper()
	srv.CreateContainer(t, container)
	rng := rand.New(rand.NewPCG(1, 2))
	f := &azFixture{srv: srv, container: container, files: map[string][]byte{}}
	for name, size := range map[string]int{"config.json": 300, "model.safetensors": 3<<20 + 17, "sub/tokenizer.json": 5000} {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.files[name] = b
		srv.Put(t, container, "model/"+name, b)
	}
	srv.Put(t, container, "other/outside.bin", []byte("not under the prefix"))
	return f
}

func fastRetry() RetryOptions {
	return RetryOptions{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, AttemptTimeout: 10 * time.Second}
}

func (f *azFixture) open(t *testing.T, prefix string, opts AzureOptions) *Azure {
	t.Helper()
	opts.Account, opts.Container, opts.Prefix = azurite.Account, f.container, prefix
	if opts.Endpoint == "" {
		opts.Endpoint = f.srv.Endpoint()
	}
	if opts.Getenv == nil {
		opts.Getenv = azEnv("AZURE_STORAGE_KEY", azurite.Key)
	}
	if opts.Retry.MaxAttempts == 0 {
		opts.Retry = fastRetry()
	}
	a, err := NewAzure(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func testAzureListReadPinned(t *testing.T, f *azFixture) {
	ctx := context.Background()
	a := f.open(t, "model", AzureOptions{})
	objs, err := a.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(f.files) {
		t.Fatalf("listed %d blobs, want %d: %+v", len(objs), len(f.files), objs)
	}
	for _, o := range objs {
		want, ok := f.files[o.Key]
		if !ok {
			t.Fatalf("listed %q, which is not under the prefix", o.Key)
		}
		if o.Size != int64(len(want)) {
			t.Errorf("%s: size %d, want %d", o.Key, o.Size, len(want))
		}
		if err := CheckObject(o); err != nil || !strings.HasPrefix(o.ETag, `"0x`) || o.Version() != "e:"+o.ETag {
			t.Errorf("%s: ETag %q, version %q: not pinned to the ETag (%v)", o.Key, o.ETag, o.Version(), err)
		}
		sum := md5.Sum(want)
		if o.Checksum != (Checksum{Algorithm: "MD5", Value: base64.StdEncoding.EncodeToString(sum[:])}) {
			t.Errorf("%s: checksum %+v, want the content's MD5", o.Key, o.Checksum)
		}
		st, err := a.Stat(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		if st.Key != o.Key || st.Size != o.Size || st.ETag != o.ETag || st.Checksum != o.Checksum {
			t.Errorf("Stat(%s) = %+v; listed %+v", o.Key, st, o)
		}
		// Whole, in ranges that do not align, and past the end.
		got := make([]byte, 0, len(want))
		for off := int64(0); off < o.Size; {
			p := make([]byte, 1<<20+3)
			n, err := a.ReadAt(ctx, o, p, off)
			got = append(got, p[:n]...)
			off += int64(n)
			if off == o.Size && err != io.EOF || off < o.Size && err != nil {
				t.Fatalf("%s: ReadAt(%d) = %d, %v", o.Key, off-int64(n), n, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: bytes differ from the blob's", o.Key)
		}
		if n, err := a.ReadAt(ctx, o, make([]byte, 10), o.Size); n != 0 || err != io.EOF {
			t.Errorf("%s: ReadAt at the end = %d, %v; want 0, EOF", o.Key, n, err)
		}
	}
	if id := a.ID(); id != "az+"+f.srv.Endpoint()+"/"+f.container+"/model" || strings.Contains(id, azurite.Key) {
		t.Errorf("ID() = %q", id)
	}
	if s := a.String(); !strings.HasPrefix(s, "az://devstoreaccount1/"+f.container+"/model") || strings.Contains(s, azurite.Key) {
		t.Errorf("String() = %q", s)
	}
}

func testAzureSingleBlobPrefix(t *testing.T, f *azFixture) {
	a := f.open(t, "model/sub/tokenizer.json", AzureOptions{})
	objs, err := a.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "tokenizer.json" || objs[0].Size != 5000 {
		t.Fatalf("listing a blob's name = %+v; want that blob alone", objs)
	}
	p := make([]byte, 100)
	if _, err := a.ReadAt(context.Background(), objs[0], p, 10); err != nil || !bytes.Equal(p, f.files["sub/tokenizer.json"][10:110]) {
		t.Fatalf("ReadAt: %v, or wrong bytes", err)
	}
	if _, err := f.open(t, "nothing-here/", AzureOptions{}).List(context.Background()); !errors.Is(err, ErrNotFound) {
		t.Errorf("an empty prefix lists with %v; want ErrNotFound", err)
	}
}

func testAzureReplacedBlobFails(t *testing.T, f *azFixture) {
	ctx := context.Background()
	var obs countingObserver
	a := f.open(t, "model/", AzureOptions{Retry: RetryOptions{MaxAttempts: 4, BaseDelay: time.Millisecond, Observer: &obs}})
	objs, err := a.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var obj Object
	for _, o := range objs {
		if o.Key == "config.json" {
			obj = o
		}
	}
	p := make([]byte, 100)
	if _, err := a.ReadAt(ctx, obj, p, 0); err != nil {
		t.Fatal(err)
	}
	// Same size, other bytes: only the ETag tells.
	f.srv.Put(t, f.container, "model/config.json", bytes.Repeat([]byte{'x'}, len(f.files["config.json"])))
	retriesBefore := obs.retries.Load()
	n, err := a.ReadAt(ctx, obj, p, 0)
	if !errors.Is(err, ErrChanged) || n != 0 {
		t.Fatalf("reading a replaced blob = %d, %v; want ErrChanged", n, err)
	}
	if obs.retries.Load() != retriesBefore {
		t.Errorf("a changed blob was retried")
	}
	if Unreachable(err) {
		t.Errorf("Unreachable(%v) = true; a changed blob is an answer", err)
	}
}

type countingObserver struct {
	mu       sync.Mutex
	requests map[string]int
	retries  atomic.Int64
}

func (o *countingObserver) Request(op string, _ int64, _ time.Duration, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.requests == nil {
		o.requests = map[string]int{}
	}
	o.requests[op]++
}

func (o *countingObserver) Retry(string) { o.retries.Add(1) }

func testAzureRefusedCredentials(t *testing.T, f *azFixture) {
	ctx := context.Background()
	wrong := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("k"), 64))
	var obs countingObserver
	a := f.open(t, "model/", AzureOptions{AccountKey: wrong, Retry: RetryOptions{MaxAttempts: 4, BaseDelay: time.Millisecond, Observer: &obs}})
	_, err := a.List(ctx)
	if !errors.Is(err, ErrAccess) {
		t.Fatalf("listing with a wrong key = %v; want ErrAccess", err)
	}
	if Unreachable(err) {
		t.Errorf("Unreachable(%v) = true: refused credentials must not fall back to a saved listing", err)
	}
	if obs.retries.Load() != 0 {
		t.Errorf("refused credentials were retried %d times", obs.retries.Load())
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("error quotes the key: %v", err)
	}
	if _, err := NewAzure(AzureOptions{Account: "acct1", Container: "models", AccountKey: "not base64!"}); err == nil || strings.Contains(err.Error(), "not base64!") {
		t.Errorf("a malformed key: %v", err)
	}
	if _, err := NewAzure(AzureOptions{Account: "acct1", Container: "models", Getenv: azEnv("AZURE_STORAGE_KEY", azurite.Key, "AZURE_STORAGE_SAS_TOKEN", "sv=1&sig=x")}); err == nil {
		t.Errorf("both a key and a SAS in the environment: no error")
	}
}

func testAzureSAS(t *testing.T, f *azFixture) {
	ctx := context.Background()
	cred, err := azblob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(perms sas.ContainerPermissions) string {
		q, err := sas.BlobSignatureValues{
			Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour), ContainerName: f.container,
			Permissions: perms.String(),
		}.SignWithSharedKey(cred)
		if err != nil {
			t.Fatal(err)
		}
		return q.Encode()
	}
	// From the environment, as a mount gets it.
	token := "?" + sign(sas.ContainerPermissions{Read: true, List: true})
	a := f.open(t, "model/", AzureOptions{Getenv: azEnv("AZURE_STORAGE_SAS_TOKEN", token)})
	objs, err := a.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(f.files) {
		t.Fatalf("listed %d blobs with the SAS, want %d", len(objs), len(f.files))
	}
	p := make([]byte, 64)
	if _, err := a.ReadAt(ctx, objs[0], p, 1); err != nil || !bytes.Equal(p, f.files[objs[0].Key][1:65]) {
		t.Fatalf("ReadAt with the SAS: %v, or wrong bytes", err)
	}
	if strings.Contains(a.ID()+a.String(), "sig=") {
		t.Errorf("ID or String holds the SAS: %s %s", a.ID(), a.String())
	}

	// A SAS that may read but not list is refused at listing.
	readOnly := sign(sas.ContainerPermissions{Read: true})
	_, err = f.open(t, "model/", AzureOptions{SAS: readOnly}).List(ctx)
	if !errors.Is(err, ErrAccess) || Unreachable(err) {
		t.Fatalf("listing with a SAS without list permission = %v; want ErrAccess", err)
	}
	sig := strings.SplitN(strings.SplitN(readOnly, "sig=", 2)[1], "&", 2)[0]
	if strings.Contains(err.Error(), sig) || strings.Contains(err.Error(), "sig=") {
		t.Errorf("error quotes the SAS: %v", err)
	}

	// A connection error through a SAS-signed client names no URL.
	dead := f.open(t, "model/", AzureOptions{SAS: readOnly, Endpoint: "http://127.0.0.1:1/" + azurite.Account,
		Retry: RetryOptions{MaxAttempts: 1}})
	_, err = dead.List(ctx)
	if err == nil || strings.Contains(err.Error(), sig) || !Unreachable(err) {
		t.Errorf("listing an endpoint that refuses connections = %v; want an outage that quotes no SAS", err)
	}
}

func testAzureOpen(t *testing.T, f *azFixture) {
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)
	t.Setenv("AZURE_STORAGE_SAS_TOKEN", "")
	loc, err := ParseLocation("az://" + azurite.Account + "/" + f.container + "/model/")
	if err != nil {
		t.Fatal(err)
	}
	// The command line's --endpoint reaches Open as S3's.
	src, err := Open(context.Background(), loc, OpenOptions{S3: S3Options{Endpoint: f.srv.Endpoint()}, Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := src.List(context.Background())
	if err != nil || len(objs) != len(f.files) {
		t.Fatalf("List through Open = %d objects, %v", len(objs), err)
	}
	// The emulator's address without the account path gets it.
	a, err := NewAzure(AzureOptions{Account: azurite.Account, Container: f.container, Prefix: "model/", Endpoint: f.srv.URL,
		Getenv: azEnv("AZURE_STORAGE_KEY", azurite.Key), Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.List(context.Background()); err != nil {
		t.Fatalf("listing with the emulator's root as endpoint: %v", err)
	}
}

func testAzureMissingContainer(t *testing.T, f *azFixture) {
	a, err := NewAzure(AzureOptions{Account: azurite.Account, Container: "missing", Endpoint: f.srv.Endpoint(),
		Getenv: azEnv("AZURE_STORAGE_KEY", azurite.Key), Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.List(context.Background())
	if !errors.Is(err, ErrNotFound) || Unreachable(err) || !strings.Contains(err.Error(), `container "missing"`) {
		t.Fatalf("listing a missing container = %v; want ErrNotFound naming it", err)
	}
}

func testAzureNetPolicy(t *testing.T, f *azFixture) {
	policy := &NetPolicy{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	_, err := f.open(t, "model/", AzureOptions{Net: policy}).List(context.Background())
	if !errors.Is(err, ErrNetDenied) || Unreachable(err) {
		t.Fatalf("listing a denied address = %v; want ErrNetDenied", err)
	}
}

func testAzureFaultsRetried(t *testing.T, f *azFixture) {
	ctx := context.Background()
	proxy := azurite.NewProxy(t, f.srv)
	var obs countingObserver
	a := f.open(t, "model/", AzureOptions{Endpoint: proxy.Endpoint(),
		Retry: RetryOptions{MaxAttempts: 6, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, Observer: &obs}})
	// The listing's first try fails too.
	var mu sync.Mutex
	pending := []azurite.Fault{azurite.FaultBusy}
	proxy.SetChoose(func(r *http.Request) azurite.Fault {
		mu.Lock()
		defer mu.Unlock()
		if len(pending) == 0 {
			return azurite.FaultNone
		}
		f := pending[0]
		pending = pending[1:]
		return f
	})
	objs, err := a.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var obj Object
	for _, o := range objs {
		if o.Key == "model.safetensors" {
			obj = o
		}
	}
	want := f.files["model.safetensors"]
	for _, faults := range [][]azurite.Fault{
		{azurite.FaultReset}, {azurite.FaultTruncate}, {azurite.FaultInternal},
		{azurite.FaultBusy, azurite.FaultReset, azurite.FaultTruncate},
	} {
		mu.Lock()
		pending = faults
		mu.Unlock()
		before := proxy.Faults()
		p := make([]byte, 1<<20)
		n, err := a.ReadAt(ctx, obj, p, 12345)
		if err != nil || n != len(p) || !bytes.Equal(p, want[12345:12345+len(p)]) {
			t.Fatalf("faults %v: ReadAt = %d, %v, or wrong bytes", faults, n, err)
		}
		if got := proxy.Faults() - before; got != len(faults) {
			t.Fatalf("faults %v: %d injected", faults, got)
		}
	}
	if r := obs.retries.Load(); r != 7 {
		t.Errorf("%d retries counted, want 7 (one per fault)", r)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.requests[OpGet] != 4 || obs.requests[OpList] != 1 {
		t.Errorf("requests observed: %v; want 4 gets and 1 list", obs.requests)
	}
}

// An identity endpoint that cannot be reached is not an outage of the
// store: the mount has not shown it may read the source, so no saved
// listing may stand in (Unreachable is false), and the secret is not
// quoted.
func TestAzureTokenFailure(t *testing.T) {
	const secret = "client-secret-do-not-leak"
	cred, err := azidentity.NewClientSecretCredential("00000000-0000-0000-0000-000000000000", "client", secret,
		&azidentity.ClientSecretCredentialOptions{
			ClientOptions: azcore.ClientOptions{
				Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: "https://127.0.0.1:1/"},
				Retry: policy.RetryOptions{MaxRetries: -1},
			},
			DisableInstanceDiscovery: true,
		})
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAzure(AzureOptions{Account: "acct1", Container: "models", Endpoint: "https://127.0.0.1:1/acct1", Credential: cred,
		Retry: RetryOptions{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.List(context.Background())
	if !errors.Is(err, ErrAccess) || Unreachable(err) {
		t.Fatalf("listing without a token = %v; want ErrAccess, not an outage", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error quotes the client secret: %v", err)
	}
}

// A hostile or broken endpoint cannot make the SDK read an endless error
// reply or listing page into memory.
func TestAzureHostileBodies(t *testing.T) {
	endless := func(w http.ResponseWriter, status int) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		chunk := bytes.Repeat([]byte("<x>"), 1<<14)
		for written := 0; written < 64<<20; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	for _, tc := range []struct {
		status int
		want   string
	}{{http.StatusOK, "listing page is longer than"}, {http.StatusInternalServerError, "error reply is longer than"}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { endless(w, tc.status) }))
		a, err := NewAzure(AzureOptions{Account: "acct1", Container: "models", Endpoint: srv.URL + "/acct1", Anonymous: true,
			Retry: RetryOptions{MaxAttempts: 1}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.List(context.Background())
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("HTTP %d with an endless body: %v; want %q", tc.status, err, tc.want)
		}
	}
}

// versionProxy sits between the source and Azurite, which keeps no blob
// versions (3.37 ignores include=versions and ?versionid=): with
// addVersions it makes listings look like a versioned account's, each
// blob named with a current VersionId and config.json with an earlier
// version besides, and it records what each read asked for.
type versionProxy struct {
	url         string
	addVersions bool
	// refuseVersions answers listings that ask for versions as an
	// account with a hierarchical namespace does: 400.
	refuseVersions bool
	refused        atomic.Int32

	mu    sync.Mutex
	reads []http.Header // each GET of blob bytes: its headers, and X-Query its query
}

const (
	testCurrentVersion = "2026-12-02T10:00:00.1234567Z"
	testOldVersion     = "2026-01-01T10:00:00.1234567Z"
)

func newVersionProxy(t *testing.T, srv *azurite.Server, addVersions, refuseVersions bool) *versionProxy {
	t.Helper()
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	vp := &versionProxy{addVersions: addVersions, refuseVersions: refuseVersions}
	name := regexp.MustCompile(`</Name>`)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		q := resp.Request.URL.Query()
		if !vp.addVersions || q.Get("comp") != "list" || !strings.Contains(q.Get("include"), "versions") {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		b = name.ReplaceAll(b, []byte("</Name><VersionId>"+testCurrentVersion+"</VersionId><IsCurrentVersion>true</IsCurrentVersion>"))
		old := "<Blob><Name>model/config.json</Name><VersionId>" + testOldVersion + "</VersionId><Properties><Content-Length>7</Content-Length></Properties></Blob>"
		b = bytes.Replace(b, []byte("<Blobs>"), []byte("<Blobs>"+old), 1)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if vp.refuseVersions && r.URL.Query().Get("comp") == "list" && strings.Contains(r.URL.Query().Get("include"), "versions") {
			vp.refused.Add(1)
			w.Header().Set("x-ms-error-code", "InvalidQueryParameterValue")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>InvalidQueryParameterValue</Code><Message>refused</Message></Error>`)
			return
		}
		if r.Method == http.MethodGet && r.URL.Query().Get("comp") == "" {
			h := r.Header.Clone()
			h.Set("X-Query", r.URL.RawQuery)
			vp.mu.Lock()
			vp.reads = append(vp.reads, h)
			vp.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	vp.url = hs.URL + "/" + azurite.Account
	return vp
}

func (vp *versionProxy) lastRead(t *testing.T) http.Header {
	t.Helper()
	vp.mu.Lock()
	defer vp.mu.Unlock()
	if len(vp.reads) == 0 {
		t.Fatal("no read went through the proxy")
	}
	return vp.reads[len(vp.reads)-1]
}

// Where the account keeps versions, each blob is pinned to the current
// version its listing names and reads name that version (so a replaced
// blob reads as listed while the version exists), with no If-Match;
// earlier versions are not listed as files. Where it keeps none, reads
// carry If-Match on the ETag. Azurite cannot replace a blob under a
// versioned pin, so this checks the requests, not a replaced blob's
// bytes; ReplacedBlobFails checks the ETag fall-back against the store.
func testAzureVersionIDsPinReads(t *testing.T, f *azFixture) {
	ctx := context.Background()
	for _, tc := range []struct {
		name                string
		versioned, refusing bool
	}{
		{"versioned", true, false},
		{"unversioned", false, false},
		// An account with a hierarchical namespace refuses to list
		// versions: it is listed without them, once asked.
		{"refuses-versions", false, true},
	} {
		versioned := tc.versioned
		t.Run(tc.name, func(t *testing.T) {
			vp := newVersionProxy(t, f.srv, versioned, tc.refusing)
			a := f.open(t, "model", AzureOptions{Endpoint: vp.url})
			objs, err := a.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.List(ctx); err != nil {
				t.Fatal(err)
			}
			if n := vp.refused.Load(); tc.refusing && n != 1 {
				t.Errorf("%d listings asked for versions after the account refused them, want 1", n)
			}
			if len(objs) != len(f.files) {
				t.Fatalf("listed %d blobs, want %d (earlier versions are no files): %+v", len(objs), len(f.files), objs)
			}
			for _, o := range objs {
				want := ""
				if versioned {
					want = testCurrentVersion
				}
				if o.VersionID != want || o.ETag == "" {
					t.Errorf("%s: pinned to version %q, ETag %q; want version %q and the ETag", o.Key, o.VersionID, o.ETag, want)
				}
				p := make([]byte, len(f.files[o.Key]))
				if _, err := a.ReadAt(ctx, o, p, 0); err != nil && err != io.EOF {
					t.Fatalf("reading %s: %v", o.Key, err)
				}
				if !bytes.Equal(p, f.files[o.Key]) {
					t.Errorf("%s reads back different", o.Key)
				}
				h := vp.lastRead(t)
				q, _ := url.ParseQuery(h.Get("X-Query"))
				if versioned && (q.Get("versionid") != testCurrentVersion || h.Get("If-Match") != "") {
					t.Errorf("%s: read asked for version %q with If-Match %q; want version %s and no If-Match", o.Key, q.Get("versionid"), h.Get("If-Match"), testCurrentVersion)
				}
				if !versioned && (q.Has("versionid") || h.Get("If-Match") != o.ETag) {
					t.Errorf("%s: read asked for version %q with If-Match %q; want no version and If-Match %s", o.Key, q.Get("versionid"), h.Get("If-Match"), o.ETag)
				}
			}
		})
	}
}
