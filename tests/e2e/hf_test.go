package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelfs/modelfs/tests/hubserver"
)

const hfToken = "hf_e2e_token_never_logged_0123456789abcdef"

// newHub starts a Hub with the generated model in a private repo
// acme/llama (main), and points modelfs at it: HF_ENDPOINT, and a token
// file in HF_HOME, as huggingface-cli login leaves it.
func newHub(t *testing.T) (*hubserver.Server, map[string][]byte) {
	t.Helper()
	hub := hubserver.New()
	t.Cleanup(hub.Close)
	hub.AddToken(hfToken)
	files := map[string][]byte{}
	for _, name := range model.Files {
		files[name] = sourceBytes(t, name)
	}
	hub.CreateRepo("acme/llama", hubserver.RepoOptions{Private: true, Accepted: []string{hfToken}})
	hub.Push("acme/llama", "main", files)
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "token"), []byte(hfToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HF_ENDPOINT", hub.Hub.URL)
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_TOKEN", "")
	return hub, files
}

// A Hub model mounts byte for byte; a push to its branch after the mount
// does not reach reads, expired CDN links are resolved again, a body cut
// short is retried, and the token never reaches the CDN or the logs.
func TestHFSourceMountPinsRevision(t *testing.T) {
	hub, files := newHub(t)
	// No prefetch and a small readahead, so that reads, not the mount,
	// fetch the blocks, after the branch moves and the links expire.
	m := startMount(t, "hf://acme/llama", "--block-size", "1MiB", "--prefetch", "off", "--readahead", "1MiB")
	if got, want := dirNames(t, m.dir), slices.Sorted(slices.Values(model.Files)); !slices.Equal(got, want) {
		t.Fatalf("mount lists %v, want %v", got, want)
	}

	// The branch moves on before anything is read.
	moved := map[string][]byte{}
	for name, b := range files {
		moved[name] = bytes.Repeat([]byte{0xAB}, len(b))
	}
	hub.Push("acme/llama", "main", moved)

	big := biggest(t)
	for _, name := range model.Files {
		if name == big {
			continue
		}
		if got, want := sha256File(t, m.path(name)), hexSum(files[name]); got != want {
			t.Errorf("%s: sha256 %s through the mount, want the mounted commit's %s", name, got, want)
		}
	}
	// Links already handed out expire, and a CDN body is cut mid-read.
	f, err := os.Open(m.path(big))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	hub.ExpireLinks()
	hub.CutNext(4096)
	if got, want := sha256File(t, m.path(big)), hexSum(files[big]); got != want {
		t.Errorf("%s: sha256 %s through the mount, want %s", big, got, want)
	}
	if hub.CDNExpired.Load() == 0 {
		t.Error("no read met an expired link")
	}
	if n := hub.CDNWithAuth.Load(); n != 0 {
		t.Errorf("the token reached the CDN %d times", n)
	}
	m.stop(t)
	if strings.Contains(m.Log(), hfToken) {
		t.Fatal("the token reached the logs")
	}
}

// warm fills a cache from the Hub, and a manifest model may be hf://.
func TestHFSourceWarmAndManifest(t *testing.T) {
	hub, files := newHub(t)
	cacheDir := t.TempDir()
	if code, stderr := runCLI(t, os.Environ(), "warm", "--cache-dir", cacheDir, "--block-size", "1MiB", "hf://acme/llama@main"); code != 0 {
		t.Fatalf("warm: exit %d: %s", code, stderr)
	}
	if hub.CDNRequests.Load() == 0 {
		t.Fatal("warm read nothing from the CDN")
	}
	manifest := writeManifest(t, map[string]any{"llama": map[string]any{"source": "hf://acme/llama", "format": "huggingface"}})
	m := startManifestMount(t, manifest)
	for _, name := range model.Files {
		if got, want := sha256File(t, m.path("llama/"+name)), hexSum(files[name]); got != want {
			t.Errorf("%s: sha256 %s through the manifest mount, want %s", name, got, want)
		}
	}
}

// Refusals are one line that says what is missing.
func TestHFSourceAccessErrors(t *testing.T) {
	hub, _ := newHub(t)
	hub.CreateRepo("acme/gated", hubserver.RepoOptions{Gated: true})
	hub.Push("acme/gated", "main", map[string][]byte{"model.safetensors": bytes.Repeat([]byte{1}, 4096)})
	for _, tc := range []struct {
		source, token, want string
	}{
		{"hf://acme/gated", "", "has not accepted its terms: accept them at " + hub.Hub.URL + "/acme/gated"},
		{"hf://acme/llama", "hf_wrong_token", "the Hub refused the token"},
		{"hf://acme/missing", "", "repository acme/missing does not exist"},
		{"hf://acme/llama@v2", "", `revision "v2" of acme/llama does not exist`},
	} {
		env := os.Environ()
		if tc.token != "" {
			env = append(env, "HF_TOKEN="+tc.token)
		}
		code, stderr := runCLI(t, env, "mount", tc.source, t.TempDir())
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want a failure saying %q", tc.source, code, stderr, tc.want)
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") > 0 || strings.Contains(stderr, hfToken) || tc.token != "" && strings.Contains(stderr, tc.token) {
			t.Errorf("%s: want one line without the token, got %q", tc.source, stderr)
		}
	}
}

// An inline CSI volume reads a private Hub repo with its hfToken secret;
// without one it does not borrow the plugin's own Hugging Face login.
func TestHFSourceCSIVolume(t *testing.T) {
	csiEnv(t)
	hub, _ := newHub(t) // the plugin's environment has a token file
	stateDir := t.TempDir()
	p := startCSIInProcess(t, stateDir)
	ctx := context.Background()
	attrs := map[string]string{"source": "hf://acme/llama", "endpoint": hub.Hub.URL, "csi.storage.k8s.io/ephemeral": "true"}

	err := p.publish(ctx, "vol-hf-0", filepath.Join(t.TempDir(), "m0"), attrs, nil)
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "needs a token") {
		t.Fatalf("publish without a secret: %v, want NotFound saying a token is needed", err)
	}

	target := filepath.Join(t.TempDir(), "pods", "p1", "volumes", "model")
	if err := p.publish(ctx, "vol-hf", target, attrs, map[string]string{"hfToken": hfToken}); err != nil {
		t.Fatal(err)
	}
	checkModel(t, target)
	for what, text := range map[string]string{
		"the mount log": stateLogs(t, stateDir), "the mount's command line": procCmdline(t, mountPID(t, stateDir)),
		"the plugin log": p.log.String(),
	} {
		if strings.Contains(text, hfToken) {
			t.Fatalf("the token appears in %s", what)
		}
	}
	if n := hub.CDNWithAuth.Load(); n != 0 {
		t.Fatalf("the token reached the CDN %d times", n)
	}
	if _, err := p.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "vol-hf", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
}
