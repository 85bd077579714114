package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCSIMountOptions: a PersistentVolume's mountOptions reach the mount
// process, or fail the publish naming the option; sizes in volume
// attributes may be Kubernetes quantities.
func TestCSIMountOptions(t *testing.T) {
	r, stateDir := csiRemote(t)
	p := startCSIInProcess(t, stateDir)
	ctx := context.Background()
	attrs := r.volumeContext("llama/")
	attrs["memCache"] = "256Mi"
	attrs["blockSize"] = "4Mi"
	publish := func(target string, flags ...string) error {
		capability := mountCapability()
		capability.GetMount().MountFlags = flags
		_, err := p.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
			VolumeId: "vol-o", TargetPath: target, VolumeCapability: capability,
			Readonly: true, VolumeContext: attrs, Secrets: testSecrets(),
		})
		return err
	}

	bad := filepath.Join(t.TempDir(), "bad")
	err := publish(bad, "ro", "exec")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), `"exec"`) {
		t.Fatalf("publish with mount option exec: %v; want InvalidArgument naming it", err)
	}

	target := filepath.Join(t.TempDir(), "ok")
	detachLater(t, target)
	if err := publish(target, "ro", "nosuid", "readahead=64Mi"); err != nil {
		t.Fatal(err)
	}
	cmdline := procCmdline(t, recordPID(t, stateDir, target))
	for _, want := range []string{"--readahead 67108864", "--mem-cache 268435456", "--block-size 4194304"} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("mount command line %q lacks %q", cmdline, want)
		}
	}
	checkModel(t, target)
	unpublish(t, p, "vol-o", target)
}
