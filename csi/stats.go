package csi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// volumeStatsTimeout bounds asking a volume's mount process for its
// stats: a mount that does not answer is reported so, it does not hold up
// kubelet.
const volumeStatsTimeout = 3 * time.Second

// maxStatsBytes bounds the stats a mount may send back.
const maxStatsBytes = 64 << 20

// volumeStats is what NodeGetVolumeStats needs of a mount's stats
// (mount.Snapshot, decoded here so that the plugin does not link the
// filesystem).
type volumeStats struct {
	Files []struct {
		Path   string `json:"path"`
		Verify string `json:"verify"`
	} `json:"files"`
	Totals struct {
		Files int64 `json:"files"`
		Size  int64 `json:"size"`
	} `json:"totals"`
}

// NodeGetVolumeStats implements the Node service. A volume is its model,
// read-only: its bytes total and used are the model's size (none
// available, as df shows a read-only file system), and its inodes the
// files it shows. How much of it is cached is in the volume's metrics.
// The figures come from the mount process over its socket, never from
// the FUSE mount, which may hang; a mount that is gone or does not answer
// is Unavailable here, and INACCESSIBLE in NodeGetVolumeHealth.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csipb.NodeGetVolumeStatsRequest) (*csipb.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	target := req.GetVolumePath()
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume path is required")
	}
	rec, err := d.publishedAt(req.GetVolumeId(), target)
	if err != nil {
		return nil, err
	}
	st, err := d.volumeStats(ctx, rec)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &csipb.NodeGetVolumeStatsResponse{Usage: []*csipb.VolumeUsage{
		{Unit: csipb.VolumeUsage_BYTES, Total: st.Totals.Size, Used: st.Totals.Size},
		{Unit: csipb.VolumeUsage_INODES, Total: st.Totals.Files, Used: st.Totals.Files},
	}}, nil
}

// NodeGetVolumeHealth implements the Node service: a volume with a file
// that does not match its store's checksum (reads of it fail with EIO)
// reports DATA_LOSS, naming the files; one whose mount process is gone or
// does not answer, INACCESSIBLE. Without a publish path, every target the
// volume is published at on this node is looked at.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csipb.NodeGetVolumeHealthRequest) (*csipb.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	var recs []*record
	if target := req.GetVolumePublishPath(); target != "" {
		rec, err := d.publishedAt(id, target)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	} else {
		for _, rec := range d.mount.records() {
			if rec.VolumeID == id {
				recs = append(recs, rec)
			}
		}
		if len(recs) == 0 {
			return nil, status.Errorf(codes.NotFound, "volume %s is not published on this node", id)
		}
	}
	health := &csipb.VolumeHealth{VolumeId: id}
	seen := map[string]bool{}
	add := func(kind csipb.VolumeHealthErrorType, reason, msg string) {
		if seen[reason] {
			return // one entry per (status, reason)
		}
		seen[reason] = true
		health.HealthStatuses = append(health.HealthStatuses, &csipb.VolumeHealth_VolumeHealthEntry{Status: kind, Reason: reason, Message: msg})
	}
	for _, rec := range recs {
		st, err := d.volumeStats(ctx, rec)
		if errors.Is(err, errNoStatsSocket) {
			continue // mounted by an older plugin: nothing known either way
		}
		if err != nil {
			add(csipb.VolumeHealthErrorType_INACCESSIBLE, "MountNotAnswering", err.Error())
			continue
		}
		if msg := st.failedMessage(); msg != "" {
			add(csipb.VolumeHealthErrorType_DATA_LOSS, "ChecksumMismatch", msg)
		}
	}
	return &csipb.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
}

// publishedAt returns the record of volume id published at target, or
// the gRPC error to answer.
func (d *Driver) publishedAt(id, target string) (*record, error) {
	if !filepath.IsAbs(target) || filepath.Clean(target) != target {
		// Never a target this plugin published at.
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %q, not an absolute, clean path", id, target)
	}
	rec, err := d.mount.load(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if rec == nil || rec.VolumeID != id {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", id, target)
	}
	return rec, nil
}

// errNoStatsSocket: the volume's mount process serves no stats socket (a
// plugin before this one started it).
var errNoStatsSocket = errors.New("the volume's mount serves no stats socket")

// volumeStats asks rec's mount process for its stats.
func (d *Driver) volumeStats(ctx context.Context, rec *record) (*volumeStats, error) {
	if !ownsTarget(rec) {
		return nil, fmt.Errorf("the mount process of %s is not running: reads fail until it is restarted", rec.Target)
	}
	sock := d.mount.metricsSocket(rec.Target)
	if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", rec.Target, errNoStatsSocket)
	}
	st, err := fetchVolumeStats(ctx, sock)
	if err != nil {
		return nil, fmt.Errorf("the mount process of %s did not report its state: %w", rec.Target, err)
	}
	return st, nil
}

// failedMessage names the files that failed their store's checksum, or
// is empty.
func (st *volumeStats) failedMessage() string {
	var failed []string
	for _, f := range st.Files {
		if f.Verify == "failed" {
			failed = append(failed, f.Path)
		}
	}
	if len(failed) == 0 {
		return ""
	}
	names, more := failed, ""
	if len(names) > 5 {
		names, more = names[:5], fmt.Sprintf(" and %d more", len(failed)-5)
	}
	return fmt.Sprintf("%d file(s) do not match their store's checksum, and reads of them fail with EIO: %s%s",
		len(failed), strings.Join(names, ", "), more)
}

// fetchVolumeStats asks a mount process for its stats over its socket.
func fetchVolumeStats(ctx context.Context, sock string) (*volumeStats, error) {
	ctx, cancel := context.WithTimeout(ctx, volumeStatsTimeout)
	defer cancel()
	resp, err := volumeGet(ctx, sock, "/stats", "")
	if err != nil {
		return nil, fmt.Errorf("asking for stats: %w", err)
	}
	defer resp.Body.Close()
	var st volumeStats
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatsBytes)).Decode(&st); err != nil {
		return nil, fmt.Errorf("reading stats: %w", err)
	}
	return &st, nil
}
