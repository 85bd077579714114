package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfs/modelfs/tests/gcsemu"
)

const gcsTestBucket = "models"

// gcsFast keeps failing tests quick: few tries, short backoff.
func gcsFast(obs Observer) RetryOptions {
	return RetryOptions{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, AttemptTimeout: 10 * time.Second, Observer: obs}
}

func gcsCRC(b []byte) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))))
}

func gcsPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>11)
	}
	return b
}

// gcsSeeded is an emulator holding a few objects under m/, one outside it
// and a folder placeholder.
func gcsSeeded(t *testing.T) (*gcsemu.Emulator, map[string][]byte, map[string]int64) {
	t.Helper()
	emu := gcsemu.Start(t, gcsemu.Options{})
	emu.CreateBucket(t, gcsTestBucket)
	files := map[string][]byte{
		"config.json":                []byte(`{"model_type":"llama"}`),
		"model.safetensors":          gcsPattern(3<<20+17, 1),
		"sub dir/weights #1.bin":     gcsPattern(70_000, 2),
		"tokenizer/tokenizer.json":   bytes.Repeat([]byte("tok"), 1000),
		"empty":                      nil,
		"nested/deeper/file.gguf":    gcsPattern(4096, 3),
		"unicode/ñame-✓.safetensors": gcsPattern(100, 4),
	}
	gens := map[string]int64{}
	for k, v := range files {
		gens[k] = emu.Put(t, gcsTestBucket, "m/"+k, v)
	}
	emu.Put(t, gcsTestBucket, "m/dir/", nil) // a folder placeholder
	emu.Put(t, gcsTestBucket, "other/outside.bin", []byte("not under the prefix"))
	return emu, files, gens
}

func newTestGCS(t *testing.T, o GCSOptions) *GCS {
	t.Helper()
	g, err := NewGCS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGCSParseLocation(t *testing.T) {
	for raw, want := range map[string]Location{
		"gs://models":                {Scheme: "gs", Bucket: "models"},
		"gs://my-bucket_1/llama/8b/": {Scheme: "gs", Bucket: "my-bucket_1", Prefix: "llama/8b/"},
		"GS://models/model.gguf":     {Scheme: "gs", Bucket: "models", Prefix: "model.gguf"},
		"gs://a.b.c/x":               {Scheme: "gs", Bucket: "a.b.c", Prefix: "x"},
	} {
		got, err := ParseLocation(raw)
		if err != nil || got != want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, bad := range []string{
		"gs://", "gs:///prefix", "gs://ab", "gs://Models", "gs://-models", "gs://models-", "gs://mo dels",
		"gs://models/../x", "gs://models/a/./b", "gs://models/x?alt=media", "gs://models/x#frag",
		"gs://" + strings.Repeat("a", 64),
	} {
		if loc, err := ParseLocation(bad); err == nil {
			t.Errorf("ParseLocation(%q) = %+v, want an error", bad, loc)
		}
	}
}

// A listing has every object under the prefix with its size, pinned to
// its generation, with its CRC32C as Cloud Storage encodes it; folder
// placeholders and objects outside the prefix are not in it.
func TestGCSListPinsGenerationsAndChecksums(t *testing.T) {
	emu, files, gens := gcsSeeded(t)
	g := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m", Endpoint: emu.URL, NoSignRequest: true, Retry: gcsFast(nil)})
	objs, err := g.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(files) {
		t.Fatalf("listed %d objects, want %d: %+v", len(objs), len(files), objs)
	}
	for _, o := range objs {
		data, ok := files[o.Key]
		if !ok {
			t.Fatalf("listed %q, which is not under the prefix", o.Key)
		}
		if o.Size != int64(len(data)) || o.VersionID != strconv.FormatInt(gens[o.Key], 10) {
			t.Errorf("%s: size %d version %q; want %d and generation %d", o.Key, o.Size, o.VersionID, len(data), gens[o.Key])
		}
		if o.Checksum != (Checksum{Algorithm: "CRC32C", Value: gcsCRC(data)}) {
			t.Errorf("%s: checksum %+v, want CRC32C %s", o.Key, o.Checksum, gcsCRC(data))
		}
		if err := CheckObject(o); err != nil {
			t.Errorf("%s: %v", o.Key, err)
		}
		st, err := g.Stat(context.Background(), o.Key)
		if err != nil || st.Version() != o.Version() || st.Key != o.Key || st.Checksum != o.Checksum {
			t.Errorf("Stat(%s) = %+v, %v; want the listed version", o.Key, st, err)
		}
	}
	if g.ID() != "gs+"+strings.TrimSuffix(emu.URL, "/")+"/storage/v1/"+gcsTestBucket+"/m" {
		t.Errorf("ID %q", g.ID())
	}

	// A prefix naming one object lists that object.
	one := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m/nested/deeper/file.gguf", Endpoint: emu.URL, NoSignRequest: true, Retry: gcsFast(nil)})
	objs, err = one.List(context.Background())
	if err != nil || len(objs) != 1 || objs[0].Key != "file.gguf" || objs[0].Size != 4096 {
		t.Fatalf("single-object prefix: %+v, %v", objs, err)
	}
	buf := make([]byte, 4096)
	if n, err := one.ReadAt(context.Background(), objs[0], buf, 0); n != 4096 || err != nil || !bytes.Equal(buf, files["nested/deeper/file.gguf"]) {
		t.Fatalf("reading the single object: %d, %v", n, err)
	}

	// Nothing under a prefix, or no bucket: not found, an answer.
	for _, o := range []GCSOptions{{Bucket: gcsTestBucket, Prefix: "absent/"}, {Bucket: "no-such-bucket"}} {
		o.Endpoint, o.NoSignRequest, o.Retry = emu.URL, true, gcsFast(nil)
		_, err := newTestGCS(t, o).List(context.Background())
		if !errors.Is(err, ErrNotFound) || Unreachable(err) {
			t.Errorf("listing %+v: %v; want ErrNotFound, not an outage", o, err)
		}
	}
}

// Ranged reads return exactly the bytes asked for, io.EOF at the end.
func TestGCSRangedReads(t *testing.T) {
	emu, files, _ := gcsSeeded(t)
	obs := &recordingObserver{}
	g := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m/", Endpoint: emu.URL, NoSignRequest: true, Retry: gcsFast(obs)})
	objs, err := g.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var big Object
	for _, o := range objs {
		if o.Key == "model.safetensors" {
			big = o
		}
	}
	data := files["model.safetensors"]
	for _, c := range []struct {
		off  int64
		n    int
		want int
		eof  bool
	}{
		{0, 4096, 4096, false},
		{1 << 20, 1 << 20, 1 << 20, false},
		{12345, 1, 1, false},
		{big.Size - 10, 100, 10, true},
		{big.Size - 1<<20, 1 << 20, 1 << 20, false}, // to the end exactly
		{big.Size, 10, 0, true},
	} {
		p := make([]byte, c.n)
		n, err := g.ReadAt(context.Background(), big, p, c.off)
		if n != c.want || (err == io.EOF) != c.eof || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d bytes, EOF %v", c.n, c.off, n, err, c.want, c.eof)
		}
		if !bytes.Equal(p[:n], data[c.off:c.off+int64(n)]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", c.n, c.off)
		}
	}
	if gets := obs.byOp(OpGet); len(gets) != 5 || gets[1].bytes != 1<<20 {
		t.Errorf("observer saw %d GETs (%+v), want 5", len(gets), gets)
	}
}

// A replaced or deleted object fails the read with ErrChanged and gives
// no bytes of another generation.
func TestGCSReplacedObjectFailsRead(t *testing.T) {
	emu, files, _ := gcsSeeded(t)
	g := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m", Endpoint: emu.URL, NoSignRequest: true, Retry: gcsFast(nil)})
	objs, err := g.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]Object{}
	for _, o := range objs {
		byKey[o.Key] = o
	}
	replaced := byKey["model.safetensors"]
	newGen := emu.Put(t, gcsTestBucket, "m/model.safetensors", gcsPattern(len(files["model.safetensors"]), 99))
	emu.Delete(t, gcsTestBucket, "m/sub dir/weights #1.bin")
	for _, o := range []Object{replaced, byKey["sub dir/weights #1.bin"]} {
		p := make([]byte, 4096)
		n, err := g.ReadAt(context.Background(), o, p, 100)
		if !errors.Is(err, ErrChanged) || n != 0 || Unreachable(err) {
			t.Fatalf("read of %s after it changed: %d bytes, %v; want ErrChanged", o.Key, n, err)
		}
		if !bytes.Equal(p, make([]byte, 4096)) {
			t.Fatalf("read of %s after it changed wrote bytes", o.Key)
		}
	}
	st, err := g.Stat(context.Background(), "model.safetensors")
	if err != nil || st.VersionID != strconv.FormatInt(newGen, 10) || st.Version() == replaced.Version() {
		t.Fatalf("Stat after replace: %+v, %v; want generation %d", st, err, newGen)
	}
}

// Faults in object reads are retried to the right bytes.
func TestGCSFaultsRetried(t *testing.T) {
	emu, files, _ := gcsSeeded(t)
	obs := &recordingObserver{}
	g := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m", Endpoint: emu.URL, NoSignRequest: true, Retry: gcsFast(obs)})
	obj, err := g.Stat(context.Background(), "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	data := files["model.safetensors"]
	for _, f := range []gcsemu.FaultKind{gcsemu.Fault503, gcsemu.FaultTruncated, gcsemu.FaultReset} {
		before := emu.Reads()
		emu.FailReads(f, gcsemu.Fault503)
		p := make([]byte, 1<<20)
		n, err := g.ReadAt(context.Background(), obj, p, 1000)
		if err != nil || n != len(p) || !bytes.Equal(p, data[1000:1000+len(p)]) {
			t.Fatalf("read through %s: %d bytes, %v, equal %v", f, n, err, bytes.Equal(p, data[1000:1000+len(p)]))
		}
		if emu.PendingFaults() != 0 || emu.Reads() < before+3 {
			t.Fatalf("%s: %d faults left, %d reads: the faults were not all met", f, emu.PendingFaults(), emu.Reads()-before)
		}
	}
	if obs.retriesOf(OpGet) < 3 {
		t.Errorf("observer saw %d GET retries, want at least one per 503", obs.retriesOf(OpGet))
	}
	// A store that keeps failing: the error surfaces once the budget is
	// spent, and it is an outage.
	emu.FailReads(gcsemu.Fault503, gcsemu.Fault503, gcsemu.Fault503, gcsemu.Fault503)
	if _, err := g.ReadAt(context.Background(), obj, make([]byte, 10), 0); err == nil || !Unreachable(err) {
		t.Fatalf("read with every try failing: %v; want an outage", err)
	}
}

// tokenServer is an OAuth2 token endpoint on loopback: it grants token,
// or refuses as Google's does for a revoked key.
type tokenServer struct {
	srv    *httptest.Server
	refuse atomic.Bool
	hits   atomic.Int32
}

func newTokenServer(t *testing.T, addr, token string) *tokenServer {
	ts := &tokenServer{}
	ts.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.hits.Add(1)
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if ts.refuse.Load() || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || strings.Count(r.Form.Get("assertion"), ".") != 2 {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 3600})
	}))
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		ts.srv.Listener.Close()
		ts.srv.Listener = ln
	}
	ts.srv.Start()
	t.Cleanup(ts.srv.Close)
	return ts
}

// serviceAccountKey writes a service account key file whose token
// endpoint is tokenURL, and returns its path and private key PEM.
func serviceAccountKey(t *testing.T, tokenURL string) (string, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "test-project", "private_key_id": "0123456789abcdef",
		"private_key": pemKey, "client_email": "loader@test-project.iam.gserviceaccount.com", "client_id": "1234567890",
		"token_uri": tokenURL,
	})
	path := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pemKey
}

// Application Default Credentials: a service account key's token goes to
// the store; a refused key is ErrAccess and never an outage, and the store
// is never asked; an unreachable token endpoint is not an outage either;
// a token endpoint the network policy denies is refused; neither the key
// nor the token appears in an error.
func TestGCSServiceAccountCredentials(t *testing.T) {
	emu, files, _ := gcsSeeded(t)
	const token = "ya29.test-access-token-never-shown"
	ts := newTokenServer(t, "127.0.0.2:0", token)
	keyFile, pemKey := serviceAccountKey(t, ts.srv.URL+"/token")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
	t.Setenv(GCSEmulatorEnv, "")
	open := func(net *NetPolicy) *GCS {
		return newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m", Endpoint: emu.URL, Net: net, Retry: gcsFast(nil)})
	}
	noSecret := func(err error) {
		t.Helper()
		for _, s := range []string{token, "PRIVATE KEY", pemKey[40:80]} {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("error shows a secret: %v", err)
			}
		}
	}

	g := open(nil)
	objs, err := g.List(context.Background())
	if err != nil || len(objs) != len(files) {
		t.Fatalf("listing with a service account key: %d objects, %v", len(objs), err)
	}
	if _, err := g.ReadAt(context.Background(), objs[0], make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	if tokens := emu.BearerTokens(); len(tokens) != 1 || tokens[token] < 2 {
		t.Fatalf("the store saw bearer tokens %v, want %q on every request", tokens, token)
	}

	ts.refuse.Store(true)
	before := emu.Requests()
	_, err = open(nil).List(context.Background())
	if !errors.Is(err, ErrAccess) || Unreachable(err) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("refused key: %v; want ErrAccess naming the refusal, not an outage", err)
	}
	noSecret(err)
	if emu.Requests() != before {
		t.Fatal("a request reached the store without a token")
	}

	// The token endpoint does not answer: retried, then not an outage
	// (the mount has not shown it may read the bucket), nor a refusal.
	dead := newTokenServer(t, "127.0.0.2:0", token)
	deadKey, _ := serviceAccountKey(t, dead.srv.URL+"/token")
	dead.srv.Close()
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", deadKey)
	_, err = open(nil).List(context.Background())
	if err == nil || Unreachable(err) || errors.Is(err, ErrAccess) {
		t.Fatalf("token endpoint down: %v; want neither an outage nor a refusal", err)
	}

	// The network policy covers the token endpoint a key file names.
	ts.refuse.Store(false)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
	hits := ts.hits.Load()
	policy := &NetPolicy{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	_, err = open(policy).List(context.Background())
	if !errors.Is(err, ErrNetDenied) || Unreachable(err) || ts.hits.Load() != hits {
		t.Fatalf("token endpoint denied by the policy: %v (%d token requests); want ErrNetDenied", err, ts.hits.Load()-hits)
	}

	// A file that is no credentials: refused at once, without quoting it.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"type":"service_account","private_key":"-----BEGIN SECRET-KEY-MATERIAL"`), 0o600)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", bad)
	_, err = NewGCS(context.Background(), GCSOptions{Bucket: gcsTestBucket, Endpoint: emu.URL})
	if !errors.Is(err, ErrAccess) || Unreachable(err) || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("unusable credentials file: %v", err)
	}
}

// The metadata server (GCE, GKE Workload Identity) lends its token when
// no key file is given.
func TestGCSMetadataServerCredentials(t *testing.T) {
	emu, _, _ := gcsSeeded(t)
	const token = "ya29.metadata-token"
	md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata-Flavor") != "Google" {
			http.Error(w, "missing Metadata-Flavor", http.StatusForbidden)
			return
		}
		w.Header().Set("Metadata-Flavor", "Google")
		switch {
		case strings.HasSuffix(r.URL.Path, "/service-accounts/default/token"):
			json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 3600})
		case strings.HasSuffix(r.URL.Path, "/universe/universe-domain"):
			io.WriteString(w, "googleapis.com")
		case strings.HasSuffix(r.URL.Path, "/project/project-id"):
			io.WriteString(w, "test-project")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(md.Close)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir()) // no gcloud login
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(md.URL, "http://"))
	t.Setenv(GCSEmulatorEnv, "")
	g := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m", Endpoint: emu.URL, Retry: gcsFast(nil)})
	if _, err := g.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tokens := emu.BearerTokens(); tokens[token] == 0 {
		t.Fatalf("the store saw bearer tokens %v, want the metadata server's", tokens)
	}
}

// Anonymous access sends no credentials and reads no credentials file;
// STORAGE_EMULATOR_HOST, like Google's tools, means an unauthenticated
// emulator; fetch.Open takes the endpoint and anonymous settings callers
// give for S3.
func TestGCSAnonymous(t *testing.T) {
	emu, files, _ := gcsSeeded(t)
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte("not credentials"), 0o600)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", bad)

	t.Setenv(GCSEmulatorEnv, strings.TrimPrefix(emu.URL, "http://"))
	viaEnv := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m", Retry: gcsFast(nil)})
	t.Setenv(GCSEmulatorEnv, "")

	loc, err := ParseLocation("gs://" + gcsTestBucket + "/m/")
	if err != nil {
		t.Fatal(err)
	}
	viaOpen, err := Open(context.Background(), loc, OpenOptions{S3: S3Options{Endpoint: emu.URL, NoSignRequest: true}, Retry: gcsFast(nil)})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []Source{viaEnv, viaOpen} {
		objs, err := src.List(context.Background())
		if err != nil || len(objs) != len(files) {
			t.Fatalf("%s: %d objects, %v", src, len(objs), err)
		}
		for _, o := range objs {
			p := make([]byte, o.Size)
			if n, err := src.ReadAt(context.Background(), o, p, 0); int64(n) != o.Size || (err != nil && err != io.EOF) || !bytes.Equal(p, files[o.Key]) {
				t.Fatalf("%s: reading %s: %d, %v", src, o.Key, n, err)
			}
		}
		if !strings.HasPrefix(src.ID(), "gs+http://127.0.0.1:") {
			t.Errorf("ID %q does not name the endpoint", src.ID())
		}
	}
	if tokens := emu.BearerTokens(); len(tokens) != 0 {
		t.Fatalf("anonymous requests carried tokens %v", tokens)
	}
}

// Errors map to the package's sentinels: refusals are answers, 5xx and
// throttling are retried, a store that does not answer is an outage; the
// network policy applies to the store's endpoint.
func TestGCSErrorClasses(t *testing.T) {
	g := &GCS{name: "b"}
	for code, want := range map[int]error{404: ErrNotFound, 401: ErrAccess, 403: ErrAccess, 412: ErrChanged, 416: ErrChanged} {
		err := g.mapError(&gcsAPIError{Code: code})
		if !errors.Is(err, want) || isTransient(err) || Unreachable(err) {
			t.Errorf("HTTP %d: %v; want %v, not retried", code, err, want)
		}
	}
	for _, code := range []int{408, 429, 500, 503} {
		if err := g.mapError(&gcsAPIError{Code: code}); !isTransient(err) || !Unreachable(err) {
			t.Errorf("HTTP %d: %v; want transient", code, err)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadEndpoint := "http://" + ln.Addr().String()
	ln.Close()
	_, err = newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Endpoint: deadEndpoint, NoSignRequest: true, Retry: gcsFast(nil)}).List(context.Background())
	if err == nil || !Unreachable(err) {
		t.Fatalf("store down: %v; want an outage", err)
	}

	_, err = NewGCS(context.Background(), GCSOptions{Bucket: gcsTestBucket, Endpoint: deadEndpoint, NoSignRequest: true,
		Net: &NetPolicy{Deny: DefaultDeniedNetworks()}})
	if !errors.Is(err, ErrNetDenied) {
		t.Fatalf("endpoint on a denied network: %v", err)
	}
	for _, ep := range []string{"ftp://x", "http://user:pw@host", "http://host/?q=1", "no-scheme"} {
		if _, err := NewGCS(context.Background(), GCSOptions{Bucket: gcsTestBucket, Endpoint: ep, NoSignRequest: true}); err == nil || strings.Contains(err.Error(), "pw") {
			t.Errorf("endpoint %q: %v", ep, err)
		}
	}
}

// A listing reply of unbounded size is cut off, not read into memory.
func TestGCSListingBodyBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[`)
		chunk := bytes.Repeat([]byte(" "), 1<<20)
		for range gcsJSONBodyMax>>20 + 2 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	_, err := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Endpoint: srv.URL, NoSignRequest: true, Retry: gcsFast(nil)}).List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("listing of unbounded size: %v", err)
	}
}

// A body cut short resumes from the byte it reached within one attempt:
// the pinned generation makes the rest the same object's bytes.
func TestGCSCutBodyResumes(t *testing.T) {
	emu, files, _ := gcsSeeded(t)
	obs := &recordingObserver{}
	retry := gcsFast(obs)
	retry.MaxAttempts = 1
	g := newTestGCS(t, GCSOptions{Bucket: gcsTestBucket, Prefix: "m", Endpoint: emu.URL, NoSignRequest: true, Retry: retry})
	obj, err := g.Stat(context.Background(), "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	data := files["model.safetensors"]
	before := emu.Reads()
	emu.FailReads(gcsemu.FaultTruncated, gcsemu.FaultReset)
	p := make([]byte, 1<<20)
	n, err := g.ReadAt(context.Background(), obj, p, 4321)
	if err != nil || n != len(p) || !bytes.Equal(p, data[4321:4321+len(p)]) {
		t.Fatalf("read through two cut bodies: %d bytes, %v", n, err)
	}
	if reads := emu.Reads() - before; reads != 3 || emu.PendingFaults() != 0 {
		t.Fatalf("%d requests, %d faults left; want 3 requests meeting both faults", reads, emu.PendingFaults())
	}
	if obs.retriesOf(OpGet) != 0 {
		t.Errorf("observer saw %d retries, want the resumes inside one attempt", obs.retriesOf(OpGet))
	}

	// A refusal that comes with no bytes ends the attempt.
	emu.FailReads(gcsemu.FaultTruncated, gcsemu.Fault503)
	if _, err := g.ReadAt(context.Background(), obj, p, 0); err == nil || !isTransient(err) {
		t.Fatalf("cut body, then 503, one attempt: %v; want the 503", err)
	}
}
