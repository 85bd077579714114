package e2e

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelfs/modelfs/tests/gcsemu"
)

// gcsRemote is a Cloud Storage emulator holding the model under prefix.
func gcsRemote(t *testing.T, opts gcsemu.Options, prefix string) *gcsemu.Emulator {
	t.Helper()
	needFuse(t)
	emu := gcsemu.Start(t, opts)
	emu.CreateBucket(t, bucket)
	for _, name := range model.Files {
		emu.Put(t, bucket, path.Join(prefix, name), sourceBytes(t, name))
	}
	return emu
}

// gcsMountArgs reach the emulator (through its proxy) anonymously, as a
// public bucket is read.
func gcsMountArgs(emu *gcsemu.Emulator) []string {
	return []string{"--endpoint", emu.URL, "--no-sign-request"}
}

// A gs:// model reads byte-identical through a cold mount, by read and by
// mmap faults in another process, and the mount fetched it through the
// store.
func TestGCSColdReadAndMmap(t *testing.T) {
	emu := gcsRemote(t, gcsemu.Options{}, "llama")
	m := startMount(t, "gs://"+bucket+"/llama", gcsMountArgs(emu)...)
	if got := dirNames(t, m.dir); len(got) == 0 {
		t.Fatal("the mount shows no files")
	}
	readModel(t, m)
	if emu.Reads() == 0 {
		t.Fatal("no object read reached the store")
	}

	m2 := startMount(t, "gs://"+bucket+"/llama/", gcsMountArgs(emu)...)
	out, err := exec.Command(mmapBin, "-quiet", "-order", "header", m2.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mmapread: %v\n%s", err, out)
	}
	if want := shardSums(t); string(out) != want {
		t.Fatalf("mmapread through a gs:// mount:\n%s\nwant (sha256 of the sources):\n%s", out, want)
	}
}

// After an object is replaced under a mount, reads of blocks not yet
// cached fail with EIO; nothing of the new generation is ever served.
func TestGCSReplacedObjectFailsWithEIO(t *testing.T) {
	emu := gcsRemote(t, gcsemu.Options{}, "")
	m := startMount(t, "gs://"+bucket, append(gcsMountArgs(emu), "--prefetch", "off", "--block-size", "1MiB", "--retries", "2")...)
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
	emu.Put(t, bucket, name, changed)

	off := int64(len(old)) - 3<<20 // a block nobody has read
	n, err := f.ReadAt(make([]byte, 64<<10), off)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of an uncached block after the object was replaced: %d bytes, %v; want EIO", n, err)
	}
	whole, _ := os.ReadFile(m.path(name))
	if !bytes.Equal(whole, old[:len(whole)]) {
		t.Fatal("bytes of two generations mixed")
	}
	if !loggedFailure(m.Log(), name, off) {
		t.Fatalf("no log line naming %s and a range holding offset %d:\n%s", name, off, m.Log())
	}
}

// An object whose bytes changed on the store's disk under its CRC32C
// fails verification: read whole it gives EIO, never a clean EOF, and
// stats say so; the intact object beside it verifies.
func TestGCSDamagedObjectFailsVerification(t *testing.T) {
	needFuse(t)
	emu := gcsemu.Start(t, gcsemu.Options{Dir: t.TempDir()})
	emu.CreateBucket(t, bucket)
	data := make([]byte, 3<<20+12345)
	rand.NewChaCha8([32]byte{'g', 's'}).Read(data)
	emu.Put(t, bucket, "intact.bin", data)
	emu.Put(t, bucket, "damaged.bin", data)
	stored := emu.ObjectPath(bucket, "damaged.bin")
	f, err := os.OpenFile(stored, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{data[len(data)/2] ^ 0x40}
	if _, err := f.WriteAt(b, int64(len(data)/2)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	m := startMount(t, "gs://"+bucket, append(gcsMountArgs(emu), "--block-size", "1MiB")...)
	got, err := os.ReadFile(m.path("damaged.bin"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("damaged.bin: reading it whole gave %d bytes and %v, want EIO", len(got), err)
	}
	if got, err := os.ReadFile(m.path("intact.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("intact.bin: %d bytes, %v", len(got), err)
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
	want := map[string]string{"damaged.bin": "failed", "intact.bin": "verified"}
	for _, f := range st.Files {
		if f.Verify != want[f.Path] {
			t.Errorf("stats: %s is %q, want %q", f.Path, f.Verify, want[f.Path])
		}
	}
	if !strings.Contains(m.Log(), "does not match the store's checksum") {
		t.Fatalf("no log line for the damaged object:\n%s", m.Log())
	}
}

// Faults in the middle of reads (503s, bodies cut short, reset
// connections) are retried to the right bytes.
func TestGCSFaultsRetried(t *testing.T) {
	emu := gcsRemote(t, gcsemu.Options{}, "")
	m := startMount(t, "gs://"+bucket, append(gcsMountArgs(emu), "--block-size", "1MiB", "--prefetch", "off")...)
	var faults []gcsemu.FaultKind
	for range 4 {
		faults = append(faults, gcsemu.Fault503, gcsemu.FaultTruncated, gcsemu.FaultReset)
	}
	emu.FailReads(faults...)
	readModel(t, m)
	if left := emu.PendingFaults(); left != 0 {
		t.Fatalf("%d of %d faults were never met", left, len(faults))
	}
}

// gcsServiceAccount is a service account key whose token endpoint is a
// server on loopback that grants token; it returns the key's JSON.
func gcsServiceAccount(t *testing.T, token string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || r.Form.Get("assertion") == "" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"`+token+`","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(srv.Close)
	key, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "test-project", "private_key_id": "0123456789abcdef",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "loader@test-project.iam.gserviceaccount.com", "token_uri": srv.URL + "/token",
	})
	return string(b)
}

// A gs:// volume: refused without an identity of its own; with a
// service account key secret it mounts, the store sees the key's token,
// and the key is in no argument, log or leftover file.
func TestGCSCSIVolume(t *testing.T) {
	csiEnv(t)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	emu := gcsRemote(t, gcsemu.Options{}, "llama")
	stateDir := t.TempDir()
	p := startCSIInProcess(t, stateDir)
	ctx := context.Background()
	attrs := map[string]string{"source": "gs://" + bucket + "/llama", "endpoint": emu.URL}

	inline := map[string]string{"csi.storage.k8s.io/ephemeral": "true"}
	for k, v := range attrs {
		inline[k] = v
	}
	err := p.publish(ctx, "vol-inline", filepath.Join(t.TempDir(), "inline"), inline, nil)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "gcsServiceAccountKey") {
		t.Fatalf("inline gs:// volume without a key: %v; want PermissionDenied naming the secret", err)
	}

	const token = "ya29.csi-volume-token"
	key := gcsServiceAccount(t, token)
	target := filepath.Join(t.TempDir(), "pods", "p1", "volumes", "model")
	detachLater(t, target)
	if err := p.publish(ctx, "vol-gs", target, attrs, map[string]string{"gcsServiceAccountKey": key}); err != nil {
		t.Fatalf("publishing a gs:// volume with a key: %v\n%s", err, stateLogs(t, stateDir))
	}
	checkModel(t, target)
	if tokens := emu.BearerTokens(); tokens[token] == 0 {
		t.Fatalf("the store saw bearer tokens %v, want the volume key's", tokens)
	}
	pid := mountPID(t, stateDir)
	keyPath := procEnviron(t, pid)["GOOGLE_APPLICATION_CREDENTIALS"]
	if !strings.HasPrefix(keyPath, stateDir) {
		t.Fatalf("the mount's GOOGLE_APPLICATION_CREDENTIALS is %q, want a file in the state dir", keyPath)
	}
	if _, err := os.Stat(keyPath); !os.IsNotExist(err) {
		t.Fatalf("the key file outlived the mount's start: %v", err)
	}
	for what, text := range map[string]string{
		"command line": procCmdline(t, pid), "mount log": stateLogs(t, stateDir), "plugin log": p.log.String(),
	} {
		if strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, token) {
			t.Fatalf("the key or its token appears in the %s:\n%s", what, text)
		}
	}
	unpublish(t, p, "vol-gs", target)
}
