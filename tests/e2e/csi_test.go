package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/modelfs/modelfs/csi"
	"github.com/modelfs/modelfs/internal/mountinfo"
)

// csiPlugin is a running CSI plugin and a client for it.
type csiPlugin struct {
	sock     string
	stateDir string
	node     csipb.NodeClient
	log      *syncBuffer
	driver   *csi.Driver // nil for a plugin in another process
}

// csiEnv keeps the plugin, and the mounts it starts, from finding any
// credentials but the volume's secrets.
func csiEnv(t *testing.T) {
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	os.Unsetenv("AWS_ACCESS_KEY_ID")
	os.Unsetenv("AWS_SECRET_ACCESS_KEY")
}

// csiRemote sets up the plugin's environment, a store holding the model
// under llama/, and a state dir.
func csiRemote(t *testing.T) (*remote, string) {
	t.Helper()
	csiEnv(t)
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	return r, t.TempDir()
}

// startCSIInProcess runs the driver in this process.
func startCSIInProcess(t *testing.T, stateDir string) *csiPlugin {
	t.Helper()
	return startCSIWith(t, stateDir, func(*csi.Options) {})
}

// startCSIWith runs the driver in this process with options edited by set.
func startCSIWith(t *testing.T, stateDir string, set func(*csi.Options)) *csiPlugin {
	t.Helper()
	needFuse(t)
	p := &csiPlugin{sock: filepath.Join(t.TempDir(), "csi.sock"), stateDir: stateDir, log: &syncBuffer{}}
	opts := csi.Options{
		NodeID: "node-1", Bin: modelfsBin, StateDir: stateDir, CacheDir: filepath.Join(stateDir, "cache"),
		MountTimeout: time.Minute, Logger: slog.New(slog.NewTextHandler(p.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// The test stores listen on loopback, which the default policy
		// denies, and inline volumes name them.
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		InlineSources:   csi.AnyInlineSource(),
	}
	set(&opts)
	d, err := csi.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p.driver = d
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, "unix://"+p.sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	p.dial(t)
	return p
}

func (p *csiPlugin) dial(t *testing.T) {
	t.Helper()
	// The socket file appears at bind, a moment before it listens: wait
	// until it accepts a connection.
	waitForCondition(t, "the CSI socket", func() bool {
		c, err := net.Dial("unix", p.sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	conn, err := grpc.NewClient("unix://"+p.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.node = csipb.NewNodeClient(conn)
}

func (r *remote) volumeContext(prefix string) map[string]string {
	return map[string]string{"source": "s3://" + bucket + "/" + prefix, "endpoint": r.srv.URL(), "region": region}
}

func testSecrets() map[string]string {
	return map[string]string{"awsAccessKeyID": accessKey, "awsSecretAccessKey": secretKey}
}

func mountCapability() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
	}
}

func (p *csiPlugin) publish(ctx context.Context, volID, target string, attrs, secrets map[string]string) error {
	_, err := p.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId: volID, TargetPath: target, VolumeCapability: mountCapability(),
		Readonly: true, VolumeContext: attrs, Secrets: secrets,
	})
	return err
}

// checkModel compares every model file under dir with the original.
func checkModel(t *testing.T, dir string) {
	t.Helper()
	for _, name := range model.Files {
		if got, want := sha256File(t, filepath.Join(dir, name)), hexSum(sourceBytes(t, name)); got != want {
			t.Fatalf("%s: sha256 %s, want %s", name, got, want)
		}
	}
}

// assertNoSecret fails if the secret key shows up in any of texts.
func assertNoSecret(t *testing.T, what string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, secretKey) || strings.Contains(s, accessKey) {
			t.Fatalf("a test credential appears in %s:\n%s", what, s)
		}
	}
}

// stateLogs returns the mount logs in a plugin's state dir.
func stateLogs(t *testing.T, stateDir string) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(stateDir, "volumes", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// TestCSISanity runs the csi-test sanity suite against the driver, with
// real mounts of the S3 test server. Specs it skips, and why: staging,
// expansion, snapshots, cloning, ListVolumes, GetCapacity,
// ControllerPublish, storage health (capabilities the driver does not
// offer: volumes are read-only views of remote objects, mounted per pod);
// "existing name and different capacity" (capacity is unknown until
// a node lists the model, so CreateVolume reports 0).
func TestCSISanity(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIInProcess(t, stateDir)
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secrets, fmt.Appendf(nil,
		"NodePublishVolumeSecret:\n  awsAccessKeyID: %s\n  awsSecretAccessKey: %s\n", accessKey, secretKey), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + p.sock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.SecretsFile = secrets
	cfg.TestVolumeParameters = r.volumeContext("llama/")
	cfg.IdempotentCount = 3
	sanity.Test(t, cfg)
	// Each mount lists the store (with the volume's secrets) before it is
	// up, so lists count the volumes that really mounted.
	if n := r.srv.Stats().Lists; n < 2 {
		t.Errorf("the store saw %d lists: the sanity run's volumes were not mounted", n)
	}
	assertNoSecret(t, "the plugin log", p.log.String())
	if !strings.Contains(p.log.String(), "method=NodePublishVolume") {
		t.Fatalf("the plugin log has no NodePublishVolume line:\n%s", p.log.String())
	}
}

// TestCSIPublishRead publishes a volume, reads the whole model through it,
// publishes again (idempotent) and unpublishes: target and process gone.
func TestCSIPublishRead(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIInProcess(t, stateDir)
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "pods", "p1", "volumes", "model")
	if err := p.publish(ctx, "vol-1", target, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	checkModel(t, target)
	// The pod can see what the volume has cached.
	stats, err := os.ReadFile(filepath.Join(target, ".modelfs-stats"))
	if err != nil || !json.Valid(stats) || !strings.Contains(string(stats), biggest(t)) {
		t.Fatalf("the volume's stats file: %v\n%s", err, stats)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Fatalf("volume is not mounted read-only (flags %#x, err %v)", st.Flags, err)
	}
	if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("write to the volume: %v, want EROFS", err)
	}
	logs := stateLogs(t, stateDir)
	assertNoSecret(t, "the mount log", logs)
	pid := mountPID(t, stateDir)
	assertNoSecret(t, "the mount process's command line", procCmdline(t, pid))

	if err := p.publish(ctx, "vol-1", target, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatalf("publishing again: %v", err)
	}
	if got := mountPID(t, stateDir); got != pid {
		t.Fatalf("publishing again started a second mount (pid %d, was %d)", got, pid)
	}
	err = p.publish(ctx, "vol-2", target, r.volumeContext("llama/"), testSecrets())
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("publishing another volume at the same target: %v, want AlreadyExists", err)
	}

	for range 2 { // unpublish is idempotent
		if _, err := p.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "vol-1", TargetPath: target}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("target still there after unpublish: %v", err)
	}
	waitForCondition(t, "the mount process to exit", func() bool { return !processAlive(pid) })
	assertNoSecret(t, "the plugin log", p.log.String())
}

// TestCSIErrors: bad attributes, secrets and capabilities get clear gRPC
// errors naming what is wrong; none of them echo a secret.
func TestCSIErrors(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIInProcess(t, stateDir)
	ctx := context.Background()
	with := func(k, v string) map[string]string {
		a := r.volumeContext("llama/")
		a[k] = v
		return a
	}
	cases := []struct {
		name    string
		attrs   map[string]string
		secrets map[string]string
		code    codes.Code
		want    string
	}{
		{"unknown attribute", with("speed", "fast"), testSecrets(), codes.InvalidArgument, `"speed"`},
		{"bad prefetch", with("prefetch", "eager"), testSecrets(), codes.InvalidArgument, `"prefetch"`},
		{"bad size", with("memCache", "lots"), testSecrets(), codes.InvalidArgument, `"memCache"`},
		{"local source", with("source", "file:///etc"), testSecrets(), codes.InvalidArgument, `"source"`},
		{"no source", map[string]string{"region": region}, testSecrets(), codes.InvalidArgument, `"source"`},
		{"half the key pair", r.volumeContext("llama/"), map[string]string{"awsAccessKeyID": accessKey}, codes.InvalidArgument, "awsSecretAccessKey"},
		{"unknown secret key", r.volumeContext("llama/"), map[string]string{"password": secretKey}, codes.InvalidArgument, `"password"`},
		{"wrong secret", r.volumeContext("llama/"), map[string]string{"awsAccessKeyID": accessKey, "awsSecretAccessKey": "wrong-" + secretKey}, codes.PermissionDenied, "access denied"},
		{"missing secrets", r.volumeContext("llama/"), nil, codes.PermissionDenied, "nodePublishSecretRef"},
		{"inline without secrets", with("csi.storage.k8s.io/ephemeral", "true"), nil, codes.PermissionDenied, "nodePublishSecretRef"},
		{"missing bucket", with("source", "s3://no-such-bucket/x"), testSecrets(), codes.NotFound, "no-such-bucket"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), fmt.Sprint("target-", i))
			err := p.publish(ctx, fmt.Sprint("vol-", i), target, c.attrs, c.secrets)
			if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.want) {
				t.Fatalf("got %v; want %s mentioning %q", err, c.code, c.want)
			}
			assertNoSecret(t, "the error", err.Error())
			if mounted, _ := mountinfo.IsMounted(target); mounted {
				t.Fatal("a failed publish left a mount behind")
			}
		})
	}
	_, err := p.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId: "vol-block", TargetPath: filepath.Join(t.TempDir(), "t"), VolumeContext: r.volumeContext("llama/"),
		VolumeCapability: &csipb.VolumeCapability{
			AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
			AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY},
		},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "block") {
		t.Fatalf("block volume: %v, want InvalidArgument", err)
	}
	assertNoSecret(t, "the plugin log", p.log.String(), stateLogs(t, stateDir))
}

// TestCSIPluginRestart kills the plugin (SIGKILL) while a volume is being
// read: the read completes with the right bytes, a new plugin adopts the
// volume, cleans up a volume whose mount process died meanwhile, and
// unpublishes.
func TestCSIPluginRestart(t *testing.T) {
	needFuse(t)
	r, stateDir := csiRemote(t)
	sock := filepath.Join(t.TempDir(), "csi.sock")
	start := func() (*exec.Cmd, *syncBuffer) {
		log := &syncBuffer{}
		cmd := exec.Command(modelfsBin, "--log-level", "debug", "csi", "--endpoint", "unix://"+sock,
			"--node-id", "node-1", "--state-dir", stateDir, "--cache-dir", filepath.Join(stateDir, "cache"),
			"--allow-networks", "127.0.0.0/8")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, log
	}
	plugin, log1 := start()
	p := &csiPlugin{sock: sock, stateDir: stateDir}
	p.dial(t)
	ctx := context.Background()
	base := t.TempDir()
	reading, doomed := filepath.Join(base, "reading"), filepath.Join(base, "doomed")
	for _, target := range []string{reading, doomed} {
		if err := p.publish(ctx, filepath.Base(target), target, r.volumeContext("llama/"), testSecrets()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, target := range []string{reading, doomed} {
			if mounted, _ := mountinfo.IsMounted(target); mounted {
				syscall.Unmount(target, syscall.MNT_DETACH)
			}
		}
	})
	pids := map[string]int{}
	for _, target := range []string{reading, doomed} {
		pids[target] = recordPID(t, stateDir, target)
	}

	// Read half of the biggest file, kill the plugin, read the rest.
	name := biggest(t)
	f, err := os.Open(filepath.Join(reading, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := sourceBytes(t, name)
	got := make([]byte, len(want))
	half := len(want) / 2
	if _, err := f.ReadAt(got[:half], 0); err != nil {
		t.Fatal(err)
	}
	plugin.Process.Kill()
	plugin.Wait()
	if _, err := f.ReadAt(got[half:], int64(half)); err != nil {
		t.Fatalf("reading after the plugin died: %v", err)
	}
	if hexSum(got) != hexSum(want) {
		t.Fatal("bytes read across the plugin's death differ from the original")
	}
	// While no plugin runs, the doomed volume's mount process dies.
	syscall.Kill(pids[doomed], syscall.SIGKILL)
	waitForCondition(t, "the doomed mount process to exit", func() bool { return !processAlive(pids[doomed]) })

	_, log2 := start()
	p.dial(t)
	waitForCondition(t, "the new plugin's ready line", func() bool { return strings.Contains(log2.String(), "csi plugin ready") })
	if !strings.Contains(log2.String(), "volumes_adopted=1 stale_cleaned=1") {
		t.Fatalf("the new plugin did not adopt one volume and clean one:\n%s", log2.String())
	}
	if mounted, _ := mountinfo.IsMounted(doomed); mounted {
		t.Fatal("the stale mount was not detached")
	}
	checkModel(t, reading)
	// Publishing again re-mounts the cleaned volume and keeps the live one.
	for _, target := range []string{reading, doomed} {
		if err := p.publish(ctx, filepath.Base(target), target, r.volumeContext("llama/"), testSecrets()); err != nil {
			t.Fatal(err)
		}
	}
	if got := recordPID(t, stateDir, reading); got != pids[reading] {
		t.Fatalf("the adopted volume was mounted again (pid %d, was %d)", got, pids[reading])
	}
	checkModel(t, doomed)
	for _, target := range []string{reading, doomed} {
		pid := recordPID(t, stateDir, target)
		if _, err := p.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: filepath.Base(target), TargetPath: target}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(target); !os.IsNotExist(err) {
			t.Fatalf("%s still there after unpublish: %v", target, err)
		}
		waitForCondition(t, "the mount process to exit", func() bool { return !processAlive(pid) })
	}
	assertNoSecret(t, "the plugin logs", log1.String(), log2.String())
}

// volumeRecord is the part of the plugin's per-volume record tests read.
type volumeRecord struct {
	Target string `json:"target"`
	PID    int    `json:"pid"`
}

func volumeRecords(t *testing.T, stateDir string) []volumeRecord {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(stateDir, "volumes", "*.json"))
	var recs []volumeRecord
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r volumeRecord
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("volume record %s: %v", f, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// mountPID is the pid of the only volume in a plugin's state dir.
func mountPID(t *testing.T, stateDir string) int {
	t.Helper()
	recs := volumeRecords(t, stateDir)
	if len(recs) != 1 {
		t.Fatalf("want one volume record, found %d", len(recs))
	}
	return recs[0].PID
}

// recordPID is the pid the plugin recorded for target.
func recordPID(t *testing.T, stateDir, target string) int {
	t.Helper()
	for _, r := range volumeRecords(t, stateDir) {
		if r.Target == target {
			return r.PID
		}
	}
	t.Fatalf("no volume record for %s", target)
	return 0
}

func procCmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// processAlive: running and not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndex(s, ")")
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestCSISupervisedRestart: under `csi --supervise` (what PID 1 in the
// plugin's container does) a crashed plugin server is restarted, the
// volume it served keeps reading, the new server adopts and unpublishes
// it, and the orphaned mount process is reaped.
func TestCSISupervisedRestart(t *testing.T) {
	needFuse(t)
	r, stateDir := csiRemote(t)
	sock := filepath.Join(t.TempDir(), "csi.sock")
	log := &syncBuffer{}
	sup := exec.Command(modelfsBin, "csi", "--supervise", "--endpoint", "unix://"+sock,
		"--node-id", "node-1", "--state-dir", stateDir, "--allow-networks", "127.0.0.0/8")
	sup.Stdout, sup.Stderr = log, log
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Wait() }()
	t.Cleanup(func() { sup.Process.Kill() })
	p := &csiPlugin{sock: sock, stateDir: stateDir}
	p.dial(t)
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "model")
	if err := p.publish(ctx, "vol-1", target, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted, _ := mountinfo.IsMounted(target); mounted {
			syscall.Unmount(target, syscall.MNT_DETACH)
		}
	})
	mountPid := mountPID(t, stateDir)

	server := childOf(t, sup.Process.Pid)
	syscall.Kill(server, syscall.SIGKILL)
	waitForCondition(t, "the server to be restarted", func() bool {
		return strings.Count(log.String(), "csi plugin ready") == 2
	})
	if !strings.Contains(log.String(), "volumes_adopted=1") {
		t.Fatalf("the restarted server did not adopt the volume:\n%s", log.String())
	}
	checkModel(t, target)
	p.dial(t)
	if _, err := p.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "vol-1", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	// Reaped by the supervisor, not left a zombie.
	waitForCondition(t, "the mount process to be reaped", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", mountPid))
		return os.IsNotExist(err)
	})
	sup.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-supDone:
		if err != nil {
			t.Fatalf("supervisor exit after SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("supervisor still running 30s after SIGTERM\n%s", log.String())
	}
	assertNoSecret(t, "the plugin log", log.String())
}

// childOf returns the one child process of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	var child int
	waitForCondition(t, "the plugin server process", func() bool {
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, st := range stats {
			b, err := os.ReadFile(st)
			if err != nil {
				continue
			}
			s := string(b)
			// After the command name in parentheses: state, then ppid.
			i := strings.LastIndex(s, ")")
			if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				fmt.Sscanf(filepath.Base(filepath.Dir(st)), "%d", &child)
				return true
			}
		}
		return false
	})
	return child
}
