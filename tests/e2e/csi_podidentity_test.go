package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelfs/modelfs/csi"
)

const podRole = "arn:aws:iam::123456789012:role/model-reader"

// podTokens is the volume context entry kubelet writes for a CSIDriver
// with tokenRequests.
func podTokens(t *testing.T, audience, token string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{audience: map[string]string{"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func podIdentityVolume(r *remote, t *testing.T, podUID, token string) map[string]string {
	attrs := r.volumeContext("llama/")
	attrs["roleArn"] = podRole
	attrs["csi.storage.k8s.io/pod.uid"] = podUID
	attrs["csi.storage.k8s.io/serviceAccount.tokens"] = podTokens(t, csi.DefaultTokenAudience, token)
	return attrs
}

// onlyVolume is the mount pid and token file of the one volume the
// plugin has mounted.
func onlyVolume(t *testing.T, stateDir string) (pid int, tokenFile string) {
	t.Helper()
	recs, _ := filepath.Glob(filepath.Join(stateDir, "volumes", "*.json"))
	if len(recs) != 1 {
		t.Fatalf("%d volume records, want 1", len(recs))
	}
	b, err := os.ReadFile(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	var rec volumeRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.PID, strings.TrimSuffix(recs[0], ".json") + ".token"
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestCSIPodIdentity publishes an S3 volume with a roleArn and no secrets
// through the plugin's socket: the mount reads the model as the pod, with
// credentials the SDK got from STS for the pod's token, which sits in a
// 0600 file and in no argument, environment or log. A republish with a
// fresh token replaces the file and leaves the mount alone; a token STS
// refuses fails the publish with a reason.
func TestCSIPodIdentity(t *testing.T) {
	r, stateDir := csiRemote(t)
	// The plugin's environment, which mounts without the node's identity
	// keep: where STS is, here the test server.
	t.Setenv("AWS_ENDPOINT_URL_STS", r.srv.URL())
	r.srv.TrustWebIdentity(podRole, "pod-token-1")
	p := startCSIWith(t, stateDir, func(o *csi.Options) { o.TokenAudience = csi.DefaultTokenAudience })
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "pods", "uid-p", "volumes", "kubernetes.io~csi", "model", "mount")
	if err := p.publish(ctx, "vol-p", target, podIdentityVolume(r, t, "uid-p", "pod-token-1"), nil); err != nil {
		t.Fatal(err)
	}
	checkModel(t, target)
	if n := r.srv.AssumedRoles(); n < 1 {
		t.Fatalf("the mount read the model without assuming the pod's role (%d)", n)
	}

	pid, tokenFile := onlyVolume(t, stateDir)
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(tokenFile); string(b) != "pod-token-1" {
		t.Fatalf("token file holds %q", b)
	}
	environ, err := os.ReadFile(filepathProc(pid, "environ"))
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(string(environ), "\x00")
	for _, want := range []string{"AWS_ROLE_ARN=" + podRole, "AWS_WEB_IDENTITY_TOKEN_FILE=" + tokenFile, "AWS_ROLE_SESSION_NAME=modelfs-uid-p"} {
		if !slices.Contains(env, want) {
			t.Errorf("the mount's environment lacks %s", want)
		}
	}
	cmdline, _ := os.ReadFile(filepathProc(pid, "cmdline"))
	for what, text := range map[string]string{"environment": string(environ), "argv": string(cmdline), "plugin log": p.log.String(), "mount log": stateLogs(t, stateDir)} {
		if strings.Contains(text, "pod-token") {
			t.Errorf("the pod's token appears in the mount's %s", what)
		}
		if what != "environment" && strings.Contains(text, "AWS_ROLE_ARN") {
			t.Errorf("the role setting appears in the %s", what)
		}
	}

	// Republish with a refreshed token: the file is replaced (a new
	// inode, never rewritten in place), the mount is the same process.
	before := inode(t, tokenFile)
	r.srv.TrustWebIdentity(podRole, "pod-token-2")
	if err := p.publish(ctx, "vol-p", target, podIdentityVolume(r, t, "uid-p", "pod-token-2"), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(tokenFile); string(b) != "pod-token-2" {
		t.Fatalf("after republish the token file holds %q", b)
	}
	if inode(t, tokenFile) == before {
		t.Error("the token file was rewritten in place, not replaced")
	}
	if pid2, _ := onlyVolume(t, stateDir); pid2 != pid {
		t.Fatalf("republish remounted: pid %d, then %d", pid, pid2)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the mount process is gone after republish: %v", err)
	}
	checkModel(t, target)
	leftovers, _ := filepath.Glob(filepath.Join(stateDir, "volumes", "*.token-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary token files left: %v", leftovers)
	}

	// A token STS does not trust: refused, with the reason, no file left.
	bad := filepath.Join(t.TempDir(), "pods", "uid-q", "volumes", "kubernetes.io~csi", "model", "mount")
	err = p.publish(ctx, "vol-q", bad, podIdentityVolume(r, t, "uid-q", "forged-token"), nil)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "InvalidIdentityToken") || !strings.Contains(err.Error(), "trust policy") {
		t.Fatalf("a forged token: %v; want PermissionDenied naming InvalidIdentityToken and the trust policy", err)
	}
	if strings.Contains(err.Error(), "forged-token") {
		t.Error("the error quotes the token")
	}
	// No token for the plugin's audience: the CSIDriver is missing its
	// tokenRequests.
	attrs := podIdentityVolume(r, t, "uid-q", "pod-token-1")
	attrs["csi.storage.k8s.io/serviceAccount.tokens"] = podTokens(t, "vault", "pod-token-1")
	err = p.publish(ctx, "vol-q", bad, attrs, nil)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "tokenRequests") {
		t.Fatalf("no token for the audience: %v", err)
	}
	// Keys and a role together are ambiguous.
	err = p.publish(ctx, "vol-q", bad, podIdentityVolume(r, t, "uid-q", "pod-token-1"), testSecrets())
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("role and keys: %v", err)
	}

	unpublish(t, p, "vol-p", target)
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Errorf("the token file outlived the unpublish: %v", err)
	}
}

func filepathProc(pid int, name string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), name)
}
