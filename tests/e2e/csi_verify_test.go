package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/modelfs/modelfs/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A published volume's health follows its files' verification: healthy
// while every file matches, DATA_LOSS naming the file once a damaged one
// was read (and failed with EIO); its stats give the model's size. Both
// come from the mount process's socket, not the FUSE mount.
func TestCSIVolumeHealthFollowsVerification(t *testing.T) {
	csiEnv(t)
	r, stateDir := newRemote(t), t.TempDir()
	intact := putVerifyObjects(t, r)
	// No restarts: the end of the test looks at a mount process gone.
	p := startCSIWith(t, stateDir, func(o *csi.Options) { o.MaxRestarts = -1 })
	ctx := context.Background()
	target := filepath.Join(t.TempDir(), "pods", "p1", "volumes", "model")
	if err := p.publish(ctx, "vol-v", target, r.volumeContext(""), testSecrets()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // also when the test stops early
		p.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "vol-v", TargetPath: target})
	})
	caps, err := p.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var stats, health bool
	for _, c := range caps.GetCapabilities() {
		stats = stats || c.GetRpc().GetType() == csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS
		health = health || c.GetRpc().GetType() == csipb.NodeServiceCapability_RPC_GET_VOLUME_HEALTH
	}
	if !stats || !health {
		t.Fatalf("node capabilities %v: want GET_VOLUME_STATS and GET_VOLUME_HEALTH", caps.GetCapabilities())
	}

	var total int64
	files := 0
	err = filepath.Walk(target, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && !strings.HasPrefix(info.Name(), ".modelfs") {
			total += info.Size()
			files++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.node.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: "vol-v", VolumePath: target})
	if err != nil {
		t.Fatal(err)
	}
	var gotBytes, gotFiles *csipb.VolumeUsage
	for _, u := range st.GetUsage() {
		switch u.GetUnit() {
		case csipb.VolumeUsage_BYTES:
			gotBytes = u
		case csipb.VolumeUsage_INODES:
			gotFiles = u
		}
	}
	if gotBytes == nil || gotBytes.GetTotal() != total || gotBytes.GetUsed() != total || gotBytes.GetAvailable() != 0 ||
		gotFiles == nil || gotFiles.GetTotal() != int64(files) {
		t.Fatalf("volume stats %v: want %d bytes of %d files, all used", st.GetUsage(), total, files)
	}

	getHealth := func(path string) *csipb.VolumeHealth {
		t.Helper()
		h, err := p.node.NodeGetVolumeHealth(ctx, &csipb.NodeGetVolumeHealthRequest{VolumeId: "vol-v", VolumePublishPath: path})
		if err != nil {
			t.Fatal(err)
		}
		return h.GetVolumeHealth()
	}
	if h := getHealth(target); h.GetVolumeId() != "vol-v" || len(h.GetHealthStatuses()) != 0 {
		t.Fatalf("health before any damaged file was read: %v", h)
	}
	for name, want := range intact {
		if got, err := os.ReadFile(filepath.Join(target, name)); err != nil || len(got) != len(want) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	if h := getHealth(target); len(h.GetHealthStatuses()) != 0 {
		t.Fatalf("health after reading the intact files: %v", h)
	}
	damaged := "damaged/sha256.bin"
	if _, err := os.ReadFile(filepath.Join(target, damaged)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("%s: %v, want EIO", damaged, err)
	}
	for _, path := range []string{target, ""} { // by its target, and by volume id alone
		h := getHealth(path)
		if len(h.GetHealthStatuses()) != 1 {
			t.Fatalf("health after reading %s (path %q): %v, want one entry", damaged, path, h)
		}
		e := h.GetHealthStatuses()[0]
		if e.GetStatus() != csipb.VolumeHealthErrorType_DATA_LOSS || e.GetReason() != "ChecksumMismatch" ||
			!strings.Contains(e.GetMessage(), damaged) || strings.Contains(e.GetMessage(), "intact/") {
			t.Fatalf("health entry %v: want DATA_LOSS naming only %s", e, damaged)
		}
	}

	if _, err := p.node.NodeGetVolumeHealth(ctx, &csipb.NodeGetVolumeHealthRequest{VolumeId: "vol-other"}); status.Code(err) != codes.NotFound {
		t.Fatalf("health of a volume not published here: %v, want NotFound", err)
	}
	// A volume whose mount serves no stats socket (started by an older
	// plugin) has no known health issue, and no stats.
	socks, err := filepath.Glob(filepath.Join(stateDir, "volumes", "*.sock"))
	if err != nil || len(socks) != 1 {
		t.Fatalf("the volume's stats socket: %v %v", socks, err)
	}
	if err := os.Remove(socks[0]); err != nil {
		t.Fatal(err)
	}
	if h := getHealth(target); len(h.GetHealthStatuses()) != 0 {
		t.Fatalf("health of a volume without a stats socket: %v, want none known", h)
	}
	if _, err := p.node.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: "vol-v", VolumePath: target}); status.Code(err) != codes.Unavailable {
		t.Fatalf("stats of a volume without a stats socket: %v, want Unavailable", err)
	}
	// A mount process that is gone: INACCESSIBLE, and stats Unavailable,
	// without touching the dead FUSE mount.
	pid := mountPID(t, stateDir)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitForCondition(t, "the mount process to exit", func() bool { return !processAlive(pid) })
	h := getHealth(target)
	if len(h.GetHealthStatuses()) == 0 || h.GetHealthStatuses()[0].GetStatus() != csipb.VolumeHealthErrorType_INACCESSIBLE {
		t.Fatalf("health with the mount process gone: %v, want INACCESSIBLE", h)
	}
	if _, err := p.node.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: "vol-v", VolumePath: target}); status.Code(err) != codes.Unavailable {
		t.Fatalf("stats with the mount process gone: %v, want Unavailable", err)
	}
	if _, err := p.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "vol-v", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
}
