package csi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/modelfs/modelfs/internal/units"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NodeGetInfo implements the Node service. kubelet calls it when it
// registers the plugin, which is what the startup taint waits for.
func (d *Driver) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	d.registeredOnce.Do(func() { close(d.registered) })
	return &csipb.NodeGetInfoResponse{NodeId: d.opts.NodeID}, nil
}

// NodeGetCapabilities implements the Node service: no staging (each
// publish is its own mount sharing the node cache); volume stats, and a
// volume health that follows its files' verification.
func (d *Driver) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	rpc := func(t csipb.NodeServiceCapability_RPC_Type) *csipb.NodeServiceCapability {
		return &csipb.NodeServiceCapability{Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: t}}}
	}
	return &csipb.NodeGetCapabilitiesResponse{Capabilities: []*csipb.NodeServiceCapability{
		rpc(csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS),
		rpc(csipb.NodeServiceCapability_RPC_GET_VOLUME_HEALTH),
	}}, nil
}

// NodePublishVolume mounts the volume's source read-only at the target.
// Publishing the same volume at the same target again succeeds.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	target := req.GetTargetPath()
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "target path is required")
	}
	if !filepath.IsAbs(target) || filepath.Clean(target) != target {
		return nil, status.Errorf(codes.InvalidArgument, "target path %q must be absolute and clean", target)
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	vol, err := parseVolume(req.GetVolumeContext())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := vol.setMountOptions(req.GetVolumeCapability().GetMount().GetMountFlags()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if vol.memCache > d.opts.MaxMemCache {
		return nil, status.Error(codes.InvalidArgument, badAttr(attrMemCache, "%s is over the node's cap of %s (modelfs csi --max-mem-cache)",
			units.FormatSize(vol.memCache), units.FormatSize(d.opts.MaxMemCache)).Error())
	}
	if vol.ephemeral && !d.opts.InlineSources.allows(vol) {
		return nil, status.Errorf(codes.PermissionDenied,
			"inline volumes may read only the sources the cluster admin lists (--inline-sources: %s); this volume's source or endpoint is not among them: use a PersistentVolume",
			d.opts.InlineSources)
	}
	if err := checkAddresses(d.opts.netPolicy(), vol); err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "volume source or endpoint: %v", err)
	}
	env, err := credentials(req.GetSecrets())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "nodePublishSecretRef: %v", err)
	}
	var podTok string
	if vol.roleARN != "" {
		if len(req.GetSecrets()) > 0 {
			return nil, status.Errorf(codes.InvalidArgument,
				"volume attribute %q reads as the pod's service account; it takes no nodePublishSecretRef", attrRoleARN)
		}
		if podTok, err = podToken(req.GetVolumeContext(), d.opts.TokenAudience); err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
	}
	// The node's identity goes only to volumes cluster admins wrote
	// (PersistentVolumes, StorageClasses) that bring no secrets and no
	// role: a volume with secrets of any kind, one that reads as its pod
	// (roleArn), and an inline volume any pod author can write, run with
	// no identity but their own.
	nodeIdentity := !vol.ephemeral && len(req.GetSecrets()) == 0 && vol.roleARN == "" && !d.opts.NoNodeIdentity
	if vol.scheme == "s3" && !vol.noSignRequest && !nodeIdentity && !hasS3Keys(req.GetSecrets()) && vol.roleARN == "" {
		why := "inline volumes never use the node's identity"
		switch {
		case len(req.GetSecrets()) > 0:
			why = "a volume that brings secrets never uses the node's identity"
		case !vol.ephemeral:
			why = "the plugin lends its identity to no volume (--node-identity=false)"
		}
		return nil, status.Errorf(codes.PermissionDenied,
			"%s: give the volume S3 keys (nodePublishSecretRef: %s, %s) or set noSignRequest for a public bucket",
			why, secretAccessKeyID, secretSecretAccessKey)
	}
	if vol.scheme == "az" && !vol.noSignRequest && !nodeIdentity && !hasAzureKeys(req.GetSecrets()) {
		// Without a key or SAS the mount would take a managed or
		// workload identity: the node's.
		return nil, status.Errorf(codes.PermissionDenied,
			"this volume may not use the node's identity: give it an Azure account key or SAS (nodePublishSecretRef: %s or %s) or set noSignRequest for a public container",
			secretAzureKey, secretAzureSAS)
	}
	if vol.scheme == "gs" && !vol.noSignRequest && !nodeIdentity && req.GetSecrets()[secretGCSKey] == "" {
		return nil, status.Errorf(codes.PermissionDenied,
			"a gs:// volume without the node's identity needs its own: give it a service account key (nodePublishSecretRef: %s) or set noSignRequest for a public bucket",
			secretGCSKey)
	}
	keyEnv, removeKey, err := gcsKeyFile(d.opts.StateDir, req.GetSecrets())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "nodePublishSecretRef: %v", err)
	}
	// The mount has read the key once it is up (or has failed).
	defer removeKey()
	env = append(env, keyEnv...)

	unlock := d.lockTarget(target)
	defer unlock()
	rec, err := d.mount.load(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if rec != nil {
		if rec.VolumeID != req.GetVolumeId() {
			return nil, status.Errorf(codes.AlreadyExists, "target %s already holds volume %s", target, rec.VolumeID)
		}
		state, _ := probe(target, d.opts.ProbeTimeout)
		if state == answering && ownsTarget(rec) {
			// A republish (requiresRepublish) brings the pod's
			// refreshed token: the mount's SDK rereads the file.
			if podTok != "" {
				if err := d.mount.writeToken(target, podTok); err != nil {
					return nil, status.Error(codes.Internal, err.Error())
				}
				d.setPodToken(target, podTok)
			}
			return &csipb.NodePublishVolumeResponse{}, nil
		}
		if state == wedged {
			// stop's unmount would leave the server's stuck requests,
			// and ours, waiting on it.
			d.log.Warn("volume's mount does not answer; detaching it to mount again", "target", target, "pid", rec.PID)
			if ownsTarget(rec) {
				syscall.Kill(rec.PID, syscall.SIGKILL)
			}
			if err := detach(target); err != nil {
				return nil, status.Errorf(codes.Internal, "clearing wedged mount: %v", err)
			}
		}
		// The record outlived its mount: clear it and mount again.
		if err := d.mount.stop(ctx, target); err != nil {
			return nil, status.Errorf(codes.Internal, "clearing stale mount: %v", err)
		}
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "creating target: %v", err)
	}
	// Every mount serves its metrics and stats on a socket in the state
	// dir: NodeGetVolumeStats reads them there.
	metricsSock := d.mount.metricsSocket(target)
	vol.nodeIdentity = nodeIdentity
	if d.opts.SharedCache != "" && !sharedCacheFor(&d.opts, nodeIdentity) {
		d.log.Info("volume mounts without the shared cache: it does not run with the node's identity", "volume_id", req.GetVolumeId())
	}
	args := vol.mountArgs(target, metricsSock, &d.opts)
	env = append(env, vol.mountEnv()...)
	if podTok != "" {
		if err := d.mount.writeToken(target, podTok); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		env = append(env, webIdentityEnv(vol.roleARN, d.mount.tokenPath(target), roleSessionName(req.GetVolumeContext(), req.GetVolumeId()))...)
	}
	memLimit := vol.memCacheBytes(&d.opts) + d.opts.MemoryHeadroom
	spec := &publishSpec{volumeID: req.GetVolumeId(), source: vol.shownSource(), args: args,
		env: mountEnv(os.Environ(), nodeIdentity, env), memLimit: memLimit, podToken: podTok}
	// Remembered first: a mount that dies as soon as it is up is
	// restarted too.
	d.rememberPublish(target, spec)
	if err := d.mount.start(ctx, spec.volumeID, spec.source, target, spec.args, spec.env, spec.memLimit); err != nil {
		d.forgetPublish(target)
		os.Remove(d.mount.tokenPath(target))
		var me *mountError
		if errors.As(err, &me) {
			return nil, mountFailure(me.msg)
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csipb.NodePublishVolumeResponse{}, nil
}

// mountFailure turns a mount process's error line into a gRPC error for
// kubelet's events: callers fix InvalidArgument, NotFound and
// PermissionDenied themselves.
func mountFailure(msg string) error {
	switch {
	case strings.Contains(msg, "InvalidIdentityToken"), strings.Contains(msg, "AssumeRoleWithWebIdentity"):
		return status.Errorf(codes.PermissionDenied,
			"the pod's service account could not assume the volume's role (%s): check the role's trust policy names this service account and the audience: %s",
			attrRoleARN, msg)
	case strings.Contains(msg, "no AWS credentials found"), strings.Contains(msg, "getting AWS credentials"),
		strings.Contains(msg, "get credentials"):
		return status.Errorf(codes.PermissionDenied,
			"no credentials for this volume: give it a nodePublishSecretRef (%s, %s) or the plugin an identity (IRSA, pod identity): %s",
			secretAccessKeyID, secretSecretAccessKey, msg)
	case strings.Contains(msg, "getting Google credentials"):
		return status.Errorf(codes.PermissionDenied,
			"no usable credentials for this gs:// volume: give it a nodePublishSecretRef (%s) or the plugin an identity (Workload Identity): %s",
			secretGCSKey, msg)
	case strings.Contains(msg, "access denied"), strings.Contains(msg, "denied by the network policy"):
		return status.Error(codes.PermissionDenied, msg)
	case strings.Contains(msg, "not found"), strings.Contains(msg, "no objects"):
		return status.Error(codes.NotFound, msg)
	default:
		return status.Error(codes.Internal, msg)
	}
}

// NodeUnpublishVolume unmounts the target and removes it. Unpublishing a
// target that is not mounted succeeds.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	target := req.GetTargetPath()
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "target path is required")
	}
	unlock := d.lockTarget(target)
	defer unlock()
	// The mount process exits with the unmount: not a death to restart.
	d.forgetPublish(target)
	if err := d.mount.stop(ctx, target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}
