package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/csi"
	"github.com/modelfs/modelfs/fetch"
)

// csiServerEnv marks the plugin server a supervising PID 1 started.
const csiServerEnv = "MODELFS_CSI_SERVER"

func csiCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return &cli.Command{
		Name:  "csi",
		Usage: "run the Kubernetes CSI node plugin (and the controller for StorageClass provisioning)",
		Description: `Serves the CSI Identity, Node and Controller services on --endpoint. Each
published volume runs as its own 'modelfs mount' process that outlives the
plugin; a restarted plugin adopts them. Run as a container's PID 1 (or with
--supervise), it supervises the plugin server and restarts it if it dies,
so volumes in use survive a plugin crash. See docs/kubernetes.md.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "endpoint", Value: "unix:///csi/csi.sock", Usage: "CSI gRPC endpoint", EnvVars: append(env("CSI_ENDPOINT"), "CSI_ENDPOINT")},
			&cli.StringFlag{Name: "node-id", Usage: "this node's name (required)", EnvVars: env("NODE_ID")},
			&cli.StringFlag{Name: "state-dir", Value: "/var/lib/modelfs/csi", Usage: "volume records and mount logs; must survive plugin restarts", EnvVars: env("CSI_STATE_DIR")},
			&cli.StringFlag{Name: "cache-dir", Usage: "node-wide disk block cache shared by all volumes (empty: RAM only)", EnvVars: env("CSI_CACHE_DIR")},
			&cli.StringFlag{Name: "profile-dir", Usage: "where the profile volume attribute names load profiles (default: STATE_DIR/profiles)", EnvVars: env("CSI_PROFILE_DIR")},
			&cli.BoolFlag{Name: "node-identity", Value: true, Usage: "lend the plugin's cloud identity to PersistentVolumes without secrets (never to inline volumes or volumes with secrets)", EnvVars: env("CSI_NODE_IDENTITY")},
			// Removed: inline volumes never get the node's identity. Kept
			// so that an old manifest fails with a reason.
			&cli.BoolFlag{Name: "ephemeral-node-credentials", Hidden: true, EnvVars: env("CSI_EPHEMERAL_NODE_CREDENTIALS")},
			&cli.StringFlag{Name: "shared-cache", Usage: "cluster-wide block cache, s3://bucket/prefix, for the mounts of volumes that run with the node's identity (--node-identity); read with the plugin's credentials", EnvVars: env("CSI_SHARED_CACHE")},
			&cli.StringFlag{Name: "shared-cache-endpoint", Usage: "the shared cache's S3-compatible endpoint", EnvVars: env("CSI_SHARED_CACHE_ENDPOINT")},
			&cli.StringFlag{Name: "shared-cache-region", Usage: "the shared cache's region", EnvVars: env("CSI_SHARED_CACHE_REGION")},
			&cli.StringFlag{Name: "shared-cache-profile", Usage: "the profile of the plugin's AWS shared credentials the shared cache is read with, apart from the origins'", EnvVars: env("CSI_SHARED_CACHE_PROFILE")},
			&cli.StringFlag{Name: "shared-cache-credentials-file", Usage: "AWS shared credentials file with the shared cache's own keys: every volume's mount then reads through the cache with those keys alone, tenants' volumes included", EnvVars: env("CSI_SHARED_CACHE_CREDENTIALS_FILE")},
			&cli.StringFlag{Name: "inline-sources", Value: "s3,https://huggingface.co", Usage: "what inline volumes may read, comma-separated: * (any), s3 (any AWS bucket), s3://BUCKET, http(s)://HOST[:PORT] (also allows that S3 endpoint), https://*.DOMAIN; none for no inline volumes", EnvVars: env("CSI_INLINE_SOURCES")},
			&cli.StringFlag{Name: "deny-networks", Usage: "CIDRs no volume may connect to, on top of link-local, loopback and unspecified (always denied)", EnvVars: env("CSI_DENY_NETWORKS")},
			&cli.StringFlag{Name: "allow-networks", Usage: "CIDRs volumes may connect to even though denied (a store on loopback or link-local)", EnvVars: env("CSI_ALLOW_NETWORKS")},
			&cli.StringFlag{Name: "cache-size", Value: "auto", Usage: "the node's disk cache budget, shared by every volume (auto: what the cache holds plus 80% of the free space, as each volume mounts)", EnvVars: env("CSI_CACHE_SIZE")},
			&cli.StringFlag{Name: "max-mem-cache", Value: "1GiB", Usage: "largest memCache a volume may ask for", EnvVars: env("CSI_MAX_MEM_CACHE")},
			&cli.StringFlag{Name: "mount-memory-headroom", Value: "384MiB", Usage: "added to a volume's memCache for the memory limit of its mount's cgroup (0: no per-volume cgroups)", EnvVars: env("CSI_MOUNT_MEMORY_HEADROOM")},
			&cli.BoolFlag{Name: "supervise", Usage: "run the plugin server as a child and restart it if it dies (always on as PID 1)", EnvVars: env("CSI_SUPERVISE")},
			&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus /metrics, the plugin's and every volume's (labelled volume and pod_uid), on this address, like :9809 (empty: off)", EnvVars: env("CSI_METRICS_ADDR")},
			&cli.IntFlag{Name: "max-mount-restarts", Value: 5, Usage: "how many times, per publish, to start again a volume's mount process that died (pause 1s, doubling); 0: never", EnvVars: env("CSI_MAX_MOUNT_RESTARTS")},
			&cli.StringFlag{Name: "token-audience", Value: csi.DefaultTokenAudience, Usage: "audience of the pod service account tokens volumes with a roleArn read S3 with; must match the CSIDriver's tokenRequests (empty: no pod identity)", EnvVars: env("CSI_TOKEN_AUDIENCE")},
			&cli.BoolFlag{Name: "remove-startup-taint", Value: true, Usage: "remove the taint " + csi.StartupTaintKey + " from this node (--node-id) once kubelet has registered the plugin; needs get and patch on nodes (in-cluster config)", EnvVars: env("CSI_REMOVE_STARTUP_TAINT")},
			&cli.DurationFlag{Name: "mount-timeout", Value: 2 * time.Minute, Usage: "how long a volume's mount may take to come up", EnvVars: env("CSI_MOUNT_TIMEOUT")},
		},
		Action: runCSI,
	}
}

func runCSI(c *cli.Context) error {
	if c.NArg() != 0 {
		return fmt.Errorf("csi: unexpected argument %q", c.Args().First())
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if c.String("node-id") == "" {
		return fmt.Errorf("csi: --node-id is required")
	}
	if c.Bool("ephemeral-node-credentials") {
		return fmt.Errorf("csi: --ephemeral-node-credentials was removed: inline volumes never use the node's identity; give them S3 keys in nodePublishSecretRef")
	}
	// Checked before supervising: a bad value must stop the container,
	// not have PID 1 restart a failing server every second.
	inline, err := csi.ParseInlineSources(c.String("inline-sources"))
	if err != nil {
		return fmt.Errorf("csi: --inline-sources: %w", err)
	}
	deny, err := fetch.ParseNetworks(c.String("deny-networks"))
	if err != nil {
		return fmt.Errorf("csi: --deny-networks: %w", err)
	}
	allow, err := fetch.ParseNetworks(c.String("allow-networks"))
	if err != nil {
		return fmt.Errorf("csi: --allow-networks: %w", err)
	}
	var cacheSize int64
	if v := c.String("cache-size"); v != "auto" {
		if cacheSize, err = csiSize(c, "cache-size"); err != nil {
			return err
		}
	}
	maxMem, err := csiSize(c, "max-mem-cache")
	if err != nil {
		return err
	}
	headroom, err := csiSize(c, "mount-memory-headroom")
	if err != nil {
		return err
	}
	if headroom == 0 {
		headroom = -1 // Options' "no per-volume cgroups"
	}
	if (c.Bool("supervise") || os.Getpid() == 1) && os.Getenv(csiServerEnv) == "" {
		return superviseCSI(log)
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("csi: finding the modelfs binary: %w", err)
	}
	restarts := c.Int("max-mount-restarts")
	if restarts <= 0 {
		restarts = -1 // Options' "never"
	}
	var nodes csi.Nodes
	if c.Bool("remove-startup-taint") {
		// Not fatal: without the API the plugin still serves volumes,
		// and the log says why the node keeps its taint.
		if nodes, err = csi.InClusterNodes(); err != nil {
			log.Warn("the startup taint will not be removed", "err", err)
		}
	}
	d, err := csi.New(csi.Options{
		NodeID: c.String("node-id"), Bin: bin, StateDir: c.String("state-dir"),
		CacheDir: c.String("cache-dir"), ProfileDir: c.String("profile-dir"),
		NoNodeIdentity: !c.Bool("node-identity"), InlineSources: inline,
		SharedCache: c.String("shared-cache"), SharedCacheEndpoint: c.String("shared-cache-endpoint"),
		SharedCacheRegion: c.String("shared-cache-region"), SharedCacheProfile: c.String("shared-cache-profile"),
		SharedCacheCredentialsFile: c.String("shared-cache-credentials-file"), DeniedNetworks: deny, AllowedNetworks: allow,
		CacheSize: cacheSize, MaxMemCache: maxMem, MemoryHeadroom: headroom,
		MountTimeout: c.Duration("mount-timeout"), Version: version, Logger: log,
		Metrics: c.String("metrics-addr") != "", Nodes: nodes, TokenAudience: c.String("token-audience"), MaxRestarts: restarts,
	})
	if err != nil {
		return fmt.Errorf("csi: %w", err)
	}
	// SIGTERM stops serving; the volumes' mount processes carry on.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if addr := c.String("metrics-addr"); addr != "" {
		if err := serveCSIMetrics(ctx, d.MetricsHandler(), addr, log); err != nil {
			return err
		}
	}
	return d.Serve(ctx, c.String("endpoint"))
}

// serveCSIMetrics binds addr at once, so that a bad address stops the
// plugin, and serves /metrics until ctx ends.
func serveCSIMetrics(ctx context.Context, h http.Handler, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("csi: --metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return nil
}

// csiSize reads a size flag the way volume attributes read sizes: a Helm
// value or manifest may well say 100Gi.
func csiSize(c *cli.Context, flag string) (int64, error) {
	n, ok := csi.ParseSize(c.String(flag))
	if !ok {
		return 0, usagef("csi: --%s %q: want a size such as 100Gi, 512Mi or 1GiB", flag, c.String(flag))
	}
	return n, nil
}

// superviseCSI runs as a container's init: when PID 1 exits the kernel
// kills every process in the container, mounts included, so PID 1 must not
// be the part that can crash. It runs the plugin server as a child,
// restarts it when it dies, and reaps the mount processes the server
// leaves behind when it goes.
func superviseCSI(log *slog.Logger) error {
	// Orphaned mount processes come to us, as they would to PID 1, so
	// that we reap them; this matters when we are not PID 1.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("csi: becoming a subreaper: %w", err)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	start := func() (*exec.Cmd, error) {
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Env = append(os.Environ(), csiServerEnv+"=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("csi: starting the plugin server: %w", err)
		}
		return cmd, nil
	}
	server, err := start()
	if err != nil {
		return err
	}
	stopping := false
	var restart <-chan time.Time
	for {
		select {
		case <-restart:
			restart = nil
			if server, err = start(); err != nil {
				return err
			}
		case sig := <-sigs:
			if sig != syscall.SIGCHLD {
				stopping = true
				if server != nil {
					server.Process.Signal(sig)
				}
				if server == nil {
					return nil
				}
				continue
			}
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
				if server == nil || pid != server.Process.Pid {
					continue // a mount process whose parent server died
				}
				server = nil
				if stopping {
					return nil
				}
				log.Error("csi plugin server exited; restarting it", "status", ws.ExitStatus(), "signal", ws.Signal().String())
				restart = time.After(time.Second)
			}
		}
	}
}
