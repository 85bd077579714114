package csi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// volumeIDPrefix starts every id CreateVolume hands out. A provisioned
// volume is only a view of remote objects, so the controller keeps no
// state: the id is derived from the volume name, and the volume context
// (the StorageClass parameters) travels in the PersistentVolume.
const volumeIDPrefix = "modelfs-"

// ControllerGetCapabilities implements the Controller service.
func (d *Driver) ControllerGetCapabilities(context.Context, *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	return &csipb.ControllerGetCapabilitiesResponse{Capabilities: []*csipb.ControllerServiceCapability{{
		Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{
			Type: csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		}},
	}}}, nil
}

// CreateVolume provisions a volume from StorageClass parameters: it
// checks them and names the volume; nothing is created remotely.
func (d *Driver) CreateVolume(_ context.Context, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume name is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	for _, c := range req.GetVolumeCapabilities() {
		if err := checkCapability(c); err != nil {
			return nil, err
		}
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volumes cannot be created from snapshots or other volumes")
	}
	if _, err := parseVolume(req.GetParameters()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ctx := make(map[string]string, len(req.GetParameters()))
	for k, v := range req.GetParameters() {
		if !strings.HasPrefix(k, kubernetesPrefix) {
			ctx[k] = v
		}
	}
	sum := sha256.Sum256([]byte(req.GetName()))
	return &csipb.CreateVolumeResponse{Volume: &csipb.Volume{
		VolumeId: volumeIDPrefix + hex.EncodeToString(sum[:16]),
		// The model's size is not known until it is listed on a node;
		// 0 is CSI's "unknown".
		CapacityBytes: 0,
		VolumeContext: ctx,
	}}, nil
}

// DeleteVolume forgets a provisioned volume; remote objects are never
// deleted.
func (d *Driver) DeleteVolume(_ context.Context, req *csipb.DeleteVolumeRequest) (*csipb.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	return &csipb.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms filesystem capabilities for volumes
// this driver provisioned.
func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csipb.ValidateVolumeCapabilitiesRequest) (*csipb.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	if !strings.HasPrefix(req.GetVolumeId(), volumeIDPrefix) {
		return nil, status.Errorf(codes.NotFound, "volume %s was not provisioned by %s", req.GetVolumeId(), DriverName)
	}
	for _, c := range req.GetVolumeCapabilities() {
		if err := checkCapability(c); err != nil {
			return &csipb.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
		}
	}
	return &csipb.ValidateVolumeCapabilitiesResponse{Confirmed: &csipb.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}
