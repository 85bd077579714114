package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelfs/modelfs/csi"
	"github.com/modelfs/modelfs/internal/mountinfo"
)

// nodeIdentityEnv gives the plugin (this process) a node identity: the
// test store's keys, as a node's static keys or assumed role would be, and
// the variables IRSA and pod identity set.
func nodeIdentityEnv(t *testing.T) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("node-web-identity-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", accessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secretKey)
	t.Setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/node")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tokenFile)
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials")
	config := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(config, []byte("[profile node]\nregion = "+region+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", config)
	t.Setenv("AWS_PROFILE", "node")
}

// procEnviron is a process's environment, by name.
func procEnviron(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// detachLater detaches target when the test ends, should it fail with
// the volume mounted.
func detachLater(t *testing.T, target string) {
	t.Cleanup(func() {
		if mounted, _ := mountinfo.IsMounted(target); mounted {
			syscall.Unmount(target, syscall.MNT_DETACH)
		}
	})
}

func unpublish(t *testing.T, p *csiPlugin, volID, target string) {
	t.Helper()
	if _, err := p.node.NodeUnpublishVolume(context.Background(), &csipb.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
}

// TestCSINodeIdentity: the plugin's cloud identity reaches only
// PersistentVolumes that bring no secrets. A volume with any secret (here
// one meant for HTTP sources) and every inline volume runs with no node
// credentials, no web identity or profile, and instance metadata off.
func TestCSINodeIdentity(t *testing.T) {
	r, stateDir := csiRemote(t)
	nodeIdentityEnv(t)
	p := startCSIInProcess(t, stateDir)
	ctx := context.Background()
	inline := func(a map[string]string) map[string]string {
		a["csi.storage.k8s.io/ephemeral"] = "true"
		return a
	}
	httpToken := map[string]string{"httpToken": "x"}

	// A PersistentVolume without secrets uses the node's identity.
	pv := filepath.Join(t.TempDir(), "pv")
	detachLater(t, pv)
	if err := p.publish(ctx, "pv", pv, r.volumeContext("llama/"), nil); err != nil {
		t.Fatalf("a PersistentVolume without secrets: %v", err)
	}
	checkModel(t, pv)
	unpublish(t, p, "pv", pv)

	for _, c := range []struct {
		name    string
		attrs   map[string]string
		secrets map[string]string
	}{
		{"inline with an HTTP token", inline(r.volumeContext("llama/")), httpToken},
		{"PersistentVolume with an HTTP token", r.volumeContext("llama/"), httpToken},
		{"inline without secrets", inline(r.volumeContext("llama/")), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "t")
			detachLater(t, target)
			err := p.publish(ctx, "v", target, c.attrs, c.secrets)
			if mounted, _ := mountinfo.IsMounted(target); mounted {
				unpublish(t, p, "v", target)
				t.Fatal("the volume was mounted with the node's credentials")
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("got %v, want PermissionDenied", err)
			}
			assertNoSecret(t, "the error", err.Error())
		})
	}

	// An inline volume with its own keys mounts, and its mount process
	// holds nothing of the node's identity.
	target := filepath.Join(t.TempDir(), "inline")
	detachLater(t, target)
	if err := p.publish(ctx, "inline", target, inline(r.volumeContext("llama/")), testSecrets()); err != nil {
		t.Fatal(err)
	}
	env := procEnviron(t, recordPID(t, stateDir, target))
	for _, k := range []string{"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_PROFILE"} {
		if v, ok := env[k]; ok {
			t.Errorf("the inline volume's mount process has %s=%s", k, v)
		}
	}
	if f := env["AWS_CONFIG_FILE"]; f != "" && f != os.DevNull {
		t.Errorf("the inline volume's mount process reads the node's AWS config %s", f)
	}
	if env["AWS_EC2_METADATA_DISABLED"] != "true" {
		t.Errorf("the inline volume's mount process can reach instance metadata (AWS_EC2_METADATA_DISABLED=%q)", env["AWS_EC2_METADATA_DISABLED"])
	}
	checkModel(t, target)
	unpublish(t, p, "inline", target)
}

// TestCSISourceNotInArgv: a presigned-style source URL reaches the mount
// process through its environment: its query (the signature) is in no
// command line (/proc/PID/cmdline, which every user can read, and pprof's
// cmdline), no volume record, no mount table and no log.
func TestCSISourceNotInArgv(t *testing.T) {
	const sig = "X-Amz-Signature=presigned-signature-do-not-leak-0001"
	files := http.FileServer(http.Dir(modelDir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != sig {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	_, stateDir := csiRemote(t)
	p := startCSIInProcess(t, stateDir)
	target := filepath.Join(t.TempDir(), "model")
	name := biggest(t)
	detachLater(t, target)
	if err := p.publish(context.Background(), "presigned", target, map[string]string{"source": srv.URL + "/" + name + "?" + sig}, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := sha256File(t, filepath.Join(target, name)), hexSum(sourceBytes(t, name)); got != want {
		t.Fatalf("%s: sha256 %s, want %s", name, got, want)
	}
	pid := recordPID(t, stateDir, target)
	cmdline := procCmdline(t, pid)
	if strings.Contains(cmdline, "presigned-signature") || strings.Contains(cmdline, srv.URL) {
		t.Fatalf("the source is in the mount process's command line: %s", cmdline)
	}
	if !strings.HasSuffix(strings.TrimSpace(cmdline), target) {
		t.Fatalf("the mount process's command line does not end in its target: %s", cmdline)
	}
	records, _ := filepath.Glob(filepath.Join(stateDir, "volumes", "*.json"))
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	texts := []string{string(mounts), p.log.String(), stateLogs(t, stateDir)}
	for _, f := range records {
		b, _ := os.ReadFile(f)
		texts = append(texts, string(b))
	}
	for _, s := range texts {
		if strings.Contains(s, "presigned-signature") {
			t.Fatalf("the signature leaked:\n%s", s)
		}
	}
	unpublish(t, p, "presigned", target)
}

// metadataServer stands in for instance metadata or a service behind a
// NetworkPolicy: an HTTP server on 127.0.0.2 counting its requests.
func metadataServer(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"AccessKeyId":"node-role-key"}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), &hits
}

// TestCSINetworkPolicy: a volume cannot make the plugin's mounts connect
// to denied networks (loopback and link-local by default), whether the
// source or S3 endpoint names the address, a name that resolves to it,
// or a redirect; and inline volumes read only the sources the operator
// lists.
func TestCSINetworkPolicy(t *testing.T) {
	r, stateDir := csiRemote(t)
	metadata, metaHits := metadataServer(t)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, metadata+"/latest/meta-data/iam/security-credentials/node", http.StatusFound)
	}))
	defer redirector.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(r.srv.URL(), "http://"))
	byName := "http://localhost:" + port // the test store, by a name that resolves to loopback
	ctx := context.Background()
	publish := func(p *csiPlugin, attrs, secrets map[string]string) error {
		target := filepath.Join(t.TempDir(), "t")
		detachLater(t, target)
		err := p.publish(ctx, "v", target, attrs, secrets)
		if err == nil {
			unpublish(t, p, "v", target)
		}
		return err
	}
	s3At := func(endpoint string, inline bool) map[string]string {
		a := r.volumeContext("llama/")
		a["endpoint"] = endpoint
		if inline {
			a["csi.storage.k8s.io/ephemeral"] = "true"
		}
		return a
	}
	denied := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: got %v, want PermissionDenied", what, err)
		}
		t.Logf("%s: %v", what, err)
	}

	// The default policy: loopback and link-local denied for every volume.
	strict := startCSIWith(t, stateDir, func(o *csi.Options) { o.AllowedNetworks = nil })
	lists := r.srv.Stats().Lists
	denied("an S3 endpoint on loopback", publish(strict, s3At(r.srv.URL(), false), testSecrets()))
	denied("an S3 endpoint whose name resolves to loopback", publish(strict, s3At(byName, false), testSecrets()))
	denied("instance metadata as an HTTP source", publish(strict, map[string]string{"source": "http://169.254.169.254/latest/meta-data/iam/info"}, nil))
	denied("a loopback service as an HTTP source", publish(strict, map[string]string{"source": metadata + "/latest/meta-data/iam/info"}, nil))
	if n := r.srv.Stats().Lists - lists; n != 0 {
		t.Errorf("the store on loopback answered %d lists under a policy denying loopback", n)
	}

	// The operator allows the store's address, and lists it for inline
	// volumes; the rest of loopback stays denied.
	open := startCSIWith(t, t.TempDir(), func(o *csi.Options) {
		o.AllowedNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		var err error
		if o.InlineSources, err = csi.ParseInlineSources("s3,https://huggingface.co," + r.srv.URL()); err != nil {
			t.Fatal(err)
		}
	})
	if err := publish(open, s3At(r.srv.URL(), false), testSecrets()); err != nil {
		t.Errorf("an S3 endpoint on an allowed address: %v", err)
	}
	if err := publish(open, s3At(r.srv.URL(), true), testSecrets()); err != nil {
		t.Errorf("an inline volume at a listed S3 endpoint: %v", err)
	}
	denied("a redirect to a denied address", publish(open, map[string]string{"source": redirector.URL + "/config.json"}, nil))
	denied("an inline volume at an unlisted S3 endpoint", publish(open, s3At(byName, true), testSecrets()))
	denied("an inline volume with an unlisted HTTP source", publish(open, map[string]string{
		"source": redirector.URL + "/config.json", "csi.storage.k8s.io/ephemeral": "true"}, nil))
	denied("an inline volume with an unlisted scheme", publish(open, map[string]string{
		"source": "http://huggingface.co/x/config.json", "csi.storage.k8s.io/ephemeral": "true"}, nil))
	if n := metaHits.Load(); n != 0 {
		t.Errorf("the metadata server answered %d requests", n)
	}
}

// cacheBytes is the size of the files under a disk cache's block dirs.
func cacheBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() && !strings.Contains(p, "listings") {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// volumeCgroup is the cgroup directory the plugin recorded for target.
func volumeCgroup(t *testing.T, stateDir, target string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(stateDir, "volumes", "*.json"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var r struct{ Target, Cgroup string }
		if json.Unmarshal(b, &r) == nil && r.Target == target {
			return r.Cgroup
		}
	}
	return ""
}

// TestCSIBudgets: the node's disk cache budget is the operator's, and no
// volume can shrink it (evicting its neighbours' blocks); memCache is
// capped per node; each mount process runs in a cgroup of its own whose
// memory limit follows its memCache, removed on unpublish.
func TestCSIBudgets(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIWith(t, stateDir, func(o *csi.Options) {
		o.CacheSize = 1 << 30
		o.MaxMemCache = 128 << 20
		o.MemoryHeadroom = 256 << 20
	})
	ctx := context.Background()
	cacheDir := filepath.Join(stateDir, "cache")

	// One volume fills the node cache.
	warm := filepath.Join(t.TempDir(), "warm")
	detachLater(t, warm)
	if err := p.publish(ctx, "warm", warm, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	checkModel(t, warm)
	pid := recordPID(t, stateDir, warm)
	if cmd := procCmdline(t, pid); !strings.Contains(cmd, "--cache-size 1073741824") {
		t.Errorf("the mount does not get the node's cache budget: %s", cmd)
	}
	unpublish(t, p, "warm", warm)
	filled := cacheBytes(t, cacheDir)
	if filled < 32<<20 {
		t.Fatalf("the node cache holds %d bytes after reading the model", filled)
	}

	with := func(k, v string) map[string]string {
		a := r.volumeContext("llama/")
		a[k] = v
		return a
	}
	for _, c := range []struct {
		name  string
		attrs map[string]string
		want  string
	}{
		{"a volume shrinking the node cache", with("cacheSize", "1MiB"), `"cacheSize"`},
		{"a RAM cache over the node's cap", with("memCache", "1GiB"), `"memCache"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "t")
			detachLater(t, target)
			err := p.publish(ctx, "v", target, c.attrs, testSecrets())
			if mounted, _ := mountinfo.IsMounted(target); mounted {
				unpublish(t, p, "v", target)
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want InvalidArgument naming %s", err, c.want)
			}
		})
	}
	if got := cacheBytes(t, cacheDir); got < filled {
		t.Fatalf("the node cache shrank from %d to %d bytes", filled, got)
	}

	// A volume's mount runs in its own cgroup, limited to its RAM cache
	// plus headroom.
	target := filepath.Join(t.TempDir(), "limited")
	detachLater(t, target)
	if err := p.publish(ctx, "limited", target, with("memCache", "64MiB"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	pid = recordPID(t, stateDir, target)
	cg := volumeCgroup(t, stateDir, target)
	if cg == "" {
		t.Skip("no cgroup memory controller the plugin may use here")
	}
	limitFile := "memory.limit_in_bytes"
	if _, err := os.Stat(filepath.Join(cg, "memory.max")); err == nil {
		limitFile = "memory.max"
	}
	limit, _ := os.ReadFile(filepath.Join(cg, limitFile))
	if got, want := strings.TrimSpace(string(limit)), fmt.Sprint(64<<20+256<<20); got != want {
		t.Errorf("the volume's cgroup limit is %s, want %s", got, want)
	}
	procs, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if !slices.Contains(strings.Fields(string(procs)), fmt.Sprint(pid)) {
		t.Errorf("the mount process %d is not in its cgroup (%s holds %q)", pid, cg, procs)
	}
	checkModel(t, target)
	unpublish(t, p, "limited", target)
	waitForCondition(t, "the volume's cgroup to be removed", func() bool {
		_, err := os.Stat(cg)
		return os.IsNotExist(err)
	})
}

// TestCSIInlineNoSavedListing: a mount that cannot reach its source falls
// back to the listing saved in the node cache, and serves the blocks
// cached for it. An inline volume must not: naming another tenant's
// source with an endpoint that does not answer, and no credentials, would
// read that tenant's cached bytes.
func TestCSIInlineNoSavedListing(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIInProcess(t, stateDir)
	ctx := context.Background()
	owner := filepath.Join(t.TempDir(), "owner")
	detachLater(t, owner)
	if err := p.publish(ctx, "owner", owner, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	checkModel(t, owner)
	unpublish(t, p, "owner", owner)

	// A closed port: the source looks down, not refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	attrs := r.volumeContext("llama/")
	attrs["endpoint"], attrs["noSignRequest"] = closed, "true"
	attrs["csi.storage.k8s.io/ephemeral"] = "true"
	target := filepath.Join(t.TempDir(), "intruder")
	detachLater(t, target)
	err = p.publish(ctx, "intruder", target, attrs, nil)
	if mounted, _ := mountinfo.IsMounted(target); mounted || err == nil {
		name := biggest(t)
		b, rerr := os.ReadFile(filepath.Join(target, name))
		t.Fatalf("an inline volume without credentials mounted another's source from the saved listing (publish: %v; read %d bytes of %s: %v)",
			err, len(b), name, rerr)
	}
}
