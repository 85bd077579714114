package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DriverName is the CSI driver name pods and the CSIDriver object use.
const DriverName = "csi.modelfs.io"

// Options configure a Driver.
type Options struct {
	// NodeID identifies this node to Kubernetes (usually the node name).
	NodeID string
	// Bin is the modelfs binary that runs each volume's mount.
	Bin string
	// StateDir holds volume records and mount logs; it must survive
	// plugin restarts (a hostPath).
	StateDir string
	// CacheDir is the node-wide disk block cache all volumes share
	// ("" for RAM only).
	CacheDir string
	// ProfileDir holds load profiles volumes name with the profile
	// attribute (default StateDir/profiles).
	ProfileDir string
	// NoNodeIdentity keeps the plugin's own cloud identity (IRSA, pod
	// identity, instance role, static keys in its environment) from every
	// volume. Without it the identity goes to PersistentVolumes (static or
	// from a StorageClass) that bring no secrets; inline volumes, which
	// any pod author writes, and volumes with secrets never get it.
	NoNodeIdentity bool
	// SharedCache is the operator's cluster-wide block tier
	// (s3://bucket/prefix). With SharedCacheCredentialsFile, the store's
	// own keys, every volume's mount reads through it with those keys
	// alone. Without, it is read with the plugin's credentials
	// (SharedCacheProfile names a profile of them), so only volumes that
	// run with the node's identity get it: the plugin's credentials never
	// reach the others. Empty: none.
	SharedCache, SharedCacheEndpoint, SharedCacheRegion, SharedCacheProfile string
	SharedCacheCredentialsFile                                              string
	// InlineSources lists what inline ephemeral volumes may read; the
	// zero value allows none.
	InlineSources InlineSources
	// DeniedNetworks are denied to every volume's connections on top of
	// fetch.DefaultDeniedNetworks (link-local, loopback, unspecified).
	DeniedNetworks []netip.Prefix
	// AllowedNetworks are exceptions to the denied networks.
	AllowedNetworks []netip.Prefix
	// CacheSize is the node's disk cache budget, in bytes, given to every
	// mount; volumes cannot change it. 0: each mount's auto budget, what the
	// cache already holds plus 80% of the free space, which never shrinks
	// the cache below what it holds.
	CacheSize int64
	// MaxMemCache caps a volume's memCache (0: 1 GiB). Volumes that ask
	// for more are refused; those that ask for none get modelfs mount's
	// auto within the cap.
	MaxMemCache int64
	// MemoryHeadroom is added to a volume's memCache to make the memory
	// limit of its mount's cgroup (0: 384 MiB; negative: no per-volume
	// cgroups).
	MemoryHeadroom int64
	// MountTimeout bounds how long a mount may take to come up.
	MountTimeout time.Duration
	// ProbeTimeout bounds the check that an existing mount answers (at
	// start, and when a target is published again); one that does not
	// answer in time is wedged: its process is stopped and it is
	// detached (default 5s).
	ProbeTimeout time.Duration
	// Metrics makes each volume's mount serve its metrics on a socket in
	// StateDir, which MetricsHandler gathers along with the plugin's own.
	Metrics bool
	// MaxRestarts is how many times, per publish, the plugin starts again
	// a volume's mount process that died (0: default 5; negative: never).
	MaxRestarts int
	// RestartBackoff is the pause before the first restart, doubled for
	// each later one (default 1s).
	RestartBackoff time.Duration
	// TokenAudience is the audience of the service account tokens kubelet
	// passes for volumes with a roleArn (the CSIDriver's tokenRequests);
	// "" turns pod identity off.
	TokenAudience string
	// Nodes, if set, is the API through which the plugin removes
	// StartupTaintKey from its Node (named NodeID) once kubelet has
	// registered it. nil: the plugin touches no Node.
	Nodes Nodes
	// RegistrationWait is how long the plugin, serving, waits for kubelet
	// to register it (its first NodeGetInfo) before it removes the
	// startup taint anyway: a plugin server restarted inside a running pod
	// is not registered again (default 2m).
	RegistrationWait time.Duration
	// Version is reported by GetPluginInfo.
	Version string
	Logger  *slog.Logger
}

// Driver is the modelfs CSI plugin: Identity, Node and a Controller that
// provisions volumes from StorageClass parameters.
type Driver struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedNodeServer
	csipb.UnimplementedControllerServer

	opts    Options
	log     *slog.Logger
	mount   *mounter
	metrics *pluginMetrics

	mu      sync.Mutex
	targets map[string]*sync.Mutex // one publish/unpublish at a time per target

	published map[string]*publishSpec // target -> how to start its mount again

	registered     chan struct{} // closed at the first NodeGetInfo: kubelet registered the plugin
	registeredOnce sync.Once
	taintBackoff   taintBackoff
}

// New checks opts and adopts the volumes an earlier plugin left mounted.
func New(opts Options) (*Driver, error) {
	if opts.NodeID == "" {
		return nil, errors.New("a node id is required")
	}
	if opts.StateDir == "" {
		return nil, errors.New("a state dir is required")
	}
	if opts.Bin == "" {
		return nil, errors.New("the modelfs binary path is required")
	}
	if opts.ProfileDir == "" {
		opts.ProfileDir = filepath.Join(opts.StateDir, "profiles")
	}
	if opts.MountTimeout <= 0 {
		opts.MountTimeout = 2 * time.Minute
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 5 * time.Second
	}
	if opts.MaxRestarts == 0 {
		opts.MaxRestarts = 5
	}
	if opts.RestartBackoff <= 0 {
		opts.RestartBackoff = time.Second
	}
	if opts.RegistrationWait <= 0 {
		opts.RegistrationWait = 2 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	for _, dir := range []string{opts.ProfileDir, opts.CacheDir} {
		if dir == "" {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	if err := validateSharedCache(opts); err != nil {
		return nil, err
	}
	if opts.MaxMemCache <= 0 {
		opts.MaxMemCache = defaultMaxMemCache
	}
	if opts.MemoryHeadroom == 0 {
		opts.MemoryHeadroom = defaultMemoryHeadroom
	}
	m, err := newMounter(opts.Bin, opts.StateDir, opts.MountTimeout, opts.Logger)
	if err != nil {
		return nil, err
	}
	if opts.MemoryHeadroom > 0 {
		cg, err := newMemcg("/")
		if err != nil {
			// Logged once: every volume then shares the plugin
			// container's memory limit.
			opts.Logger.Warn("per-volume memory limits are off: mounts share the plugin container's memory", "err", err)
		} else {
			m.cg = cg
		}
	}
	// A unix socket's path has room for 107 bytes; a mount that could not
	// bind its metrics socket would fail to start.
	if sock := m.metricsSocket("/"); len(sock) > 107 {
		return nil, fmt.Errorf("state dir %s is too long a path for the volumes' metrics sockets (%s)", opts.StateDir, sock)
	}
	d := &Driver{opts: opts, log: opts.Logger, mount: m, metrics: newPluginMetrics(m), targets: map[string]*sync.Mutex{},
		published: map[string]*publishSpec{}, registered: make(chan struct{}), taintBackoff: defaultTaintBackoff}
	m.died = d.mountDied
	res := m.adopt(opts.ProbeTimeout)
	d.metrics.adopted(res)
	d.log.Info("csi plugin ready", "driver", DriverName, "node_id", opts.NodeID, "volumes_adopted", res.Kept, "stale_cleaned", res.Cleaned,
		"wedged_cleaned", res.Wedged, "detach_failed", res.Failed,
		"cache_size_bytes", opts.CacheSize, "max_mem_cache_bytes", opts.MaxMemCache, "volume_cgroups", m.cg != nil)
	return d, nil
}

// Serve answers CSI calls on endpoint (unix:///path/csi.sock) until ctx
// ends.
func (d *Driver) Serve(ctx context.Context, endpoint string) error {
	path, err := socketPath(endpoint)
	if err != nil {
		return err
	}
	// A socket file left by a plugin that died would make Listen fail.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing old socket: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", endpoint, err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.logCalls))
	csipb.RegisterIdentityServer(srv, d)
	csipb.RegisterNodeServer(srv, d)
	csipb.RegisterControllerServer(srv, d)
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	if d.opts.Nodes != nil {
		go d.untaintWhenRegistered(ctx)
	}
	d.log.Info("serving CSI", "endpoint", endpoint)
	if err := srv.Serve(lis); err != nil {
		return fmt.Errorf("serving CSI: %w", err)
	}
	return nil
}

// untaintWhenRegistered removes the node's startup taint once kubelet has
// registered the plugin (volumes can then be published on the node), or
// after RegistrationWait of serving.
func (d *Driver) untaintWhenRegistered(ctx context.Context) {
	t := time.NewTimer(d.opts.RegistrationWait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-d.registered:
	case <-t.C:
		d.log.Warn("kubelet has not asked for the node's info since the plugin started; removing the startup taint anyway", "waited", d.opts.RegistrationWait)
	}
	if err := removeStartupTaint(ctx, d.opts.Nodes, d.opts.NodeID, d.taintBackoff, d.log); err != nil && ctx.Err() == nil {
		d.log.Error("the node keeps its startup taint: pods that need modelfs volumes will not be scheduled on it", "err", err)
	}
}

func socketPath(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" || (u.Path == "" && u.Opaque == "") {
		return "", fmt.Errorf("endpoint %q: want unix:///path/to/csi.sock", endpoint)
	}
	if u.Path != "" {
		return u.Path, nil
	}
	return u.Opaque, nil
}

// logCalls logs each call by method, volume and target, and its outcome.
// Requests are never logged whole: they carry secrets and service account
// tokens.
func (d *Driver) logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	attrs := []any{"method", method, "code", status.Code(err).String(), "duration", time.Since(start).Round(time.Millisecond)}
	if method == "NodePublishVolume" || method == "NodeUnpublishVolume" {
		d.metrics.calls.WithLabelValues(method, status.Code(err).String()).Inc()
		d.metrics.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	}
	if r, ok := req.(interface{ GetVolumeId() string }); ok && r.GetVolumeId() != "" {
		attrs = append(attrs, "volume_id", r.GetVolumeId())
	}
	if r, ok := req.(interface{ GetTargetPath() string }); ok && r.GetTargetPath() != "" {
		attrs = append(attrs, "target", r.GetTargetPath())
	}
	switch {
	case err != nil:
		d.log.Warn("csi call failed", append(attrs, "err", status.Convert(err).Message())...)
	case method == "Probe" || strings.HasSuffix(method, "GetCapabilities") || method == "GetPluginInfo":
		d.log.Debug("csi call", attrs...)
	default:
		d.log.Info("csi call", attrs...)
	}
	return resp, err
}

// GetPluginInfo implements the Identity service.
func (d *Driver) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	v := d.opts.Version
	if v == "" {
		v = "dev"
	}
	return &csipb.GetPluginInfoResponse{Name: DriverName, VendorVersion: v}, nil
}

// GetPluginCapabilities implements the Identity service.
func (d *Driver) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	return &csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{{
		Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{
			Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE,
		}},
	}}}, nil
}

// Probe implements the Identity service: the plugin is ready once New
// returned.
func (d *Driver) Probe(context.Context, *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	return &csipb.ProbeResponse{}, nil
}

// lockTarget serialises calls for one target path.
func (d *Driver) lockTarget(target string) func() {
	d.mu.Lock()
	l, ok := d.targets[target]
	if !ok {
		l = &sync.Mutex{}
		d.targets[target] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// checkCapability accepts filesystem volumes in any access mode: the mount
// is read-only whatever the mode says, so writers simply cannot write.
func checkCapability(c *csipb.VolumeCapability) error {
	if c == nil {
		return status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if c.GetBlock() != nil {
		return status.Error(codes.InvalidArgument, "block volumes are not supported: modelfs volumes are filesystems")
	}
	if c.GetMount() == nil {
		return status.Error(codes.InvalidArgument, "volume capability needs an access type (mount)")
	}
	if fst := c.GetMount().GetFsType(); fst != "" && fst != "fuse" && fst != "modelfs" {
		return status.Errorf(codes.InvalidArgument, "fsType %q is not supported; leave it empty", fst)
	}
	if c.GetAccessMode() == nil || c.GetAccessMode().GetMode() == csipb.VolumeCapability_AccessMode_UNKNOWN {
		return status.Error(codes.InvalidArgument, "volume capability needs an access mode")
	}
	return nil
}
