package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/modelfs/modelfs/tests/mountproc"
)

// The peers are the FUSE filesystems for S3 people mount models with
// today. Each runs on a fresh mount with an empty cache, against the same
// server, link and TLS as modelfs, and its daemon's CPU is read from /proc
// the same way.

var (
	allPeerTools = []string{"s3fs", "rclone", "goofys"}
	// peerScenarios are the scenarios peers run: reads any filesystem
	// serves (concurrent-4, mmap-random and the pack-* ones measure
	// modelfs's own prefetch and format).
	peerScenarios = []string{"seq", "seq-2g", "mmap-header", "load", "ttft"}
)

// peerMode is one configuration of a peer tool, one set of rows.
type peerMode struct {
	Name string // the row label: s3fs, s3fs-cache, rclone, rclone-full, goofys
	Tool string
	// Cache gives the mount a fresh, empty cache directory.
	Cache bool
}

// peerModes lists what each tool is measured as: its default, and with
// its disk cache where it has one.
func peerModes(tool string) []peerMode {
	switch tool {
	case "s3fs":
		return []peerMode{{Name: "s3fs", Tool: tool}, {Name: "s3fs-cache", Tool: tool, Cache: true}}
	case "rclone":
		return []peerMode{{Name: "rclone", Tool: tool}, {Name: "rclone-full", Tool: tool, Cache: true}}
	default:
		return []peerMode{{Name: tool, Tool: tool}}
	}
}

// installedPeers returns the modes of the tools found on PATH, and a line
// for each tool that is not.
func installedPeers(tools []string) (modes []peerMode, skipped []string) {
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			why := "not installed (make bench-peers installs s3fs and rclone)"
			if t == "goofys" {
				why = "not installed (the Go module proxy does not serve github.com/kahing/goofys; see docs/benchmarks.md)"
			}
			skipped = append(skipped, fmt.Sprintf("peer %s skipped: %s", t, why))
			continue
		}
		modes = append(modes, peerModes(t)...)
	}
	return modes, skipped
}

// peerCommand is the argv and the extra environment that mount prefix of
// the bench's bucket at dir with mode, cacheDir being its empty cache. The
// credentials travel in the environment, never in argv.
func (b *bench) peerCommand(mode peerMode, prefix, dir, cacheDir string) ([]string, []string) {
	ep := b.endpoint
	var env []string
	if b.pki != nil {
		// Go clients read SSL_CERT_FILE; s3fs hands CURL_CA_BUNDLE to
		// libcurl (s3fs has no -o option for a CA file).
		env = append(env, "SSL_CERT_FILE="+b.pki.CAFile, "CURL_CA_BUNDLE="+b.pki.CAFile)
	}
	sub := strings.TrimSuffix(prefix, "/")
	switch mode.Tool {
	case "s3fs":
		// Path-style requests against an IP endpoint, signature V4 only
		// (V2 is gone from S3); listings use s3fs's default, ListObjects V1.
		opts := []string{"ro", "url=" + ep, "use_path_request_style", "endpoint=" + region, "sigv4"}
		if mode.Cache {
			opts = append(opts, "use_cache="+cacheDir)
		}
		env = append(env, "AWSACCESSKEYID="+accessKey, "AWSSECRETACCESSKEY="+secretKey)
		return []string{"s3fs", bucket + ":/" + sub, dir, "-f", "-o", strings.Join(opts, ",")}, env
	case "rclone":
		// A remote named "bench" defined in the environment alone.
		env = append(env, "RCLONE_CONFIG_BENCH_TYPE=s3", "RCLONE_CONFIG_BENCH_PROVIDER=Other",
			"RCLONE_CONFIG_BENCH_ENV_AUTH=false", "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="+accessKey,
			"RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="+secretKey, "RCLONE_CONFIG_BENCH_ENDPOINT="+ep,
			"RCLONE_CONFIG_BENCH_REGION="+region, "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true")
		cache := "off"
		if mode.Cache {
			cache = "full"
		}
		return []string{"rclone", "mount", "bench:" + bucket + "/" + sub, dir, "--read-only",
			"--config", filepath.Join(b.cache, "rclone.conf"), "--cache-dir", cacheDir, "--vfs-cache-mode", cache}, env
	case "goofys":
		env = append(env, "AWS_REGION="+region)
		return []string{"goofys", "-f", "--endpoint", ep, "--region", region, "-o", "ro", bucket + ":" + sub, dir}, env
	}
	panic("unknown peer tool " + mode.Tool)
}

// startPeerMount runs a peer's daemon in the foreground and waits until
// dir is a mountpoint: the peers print no ready line.
func startPeerMount(ctx context.Context, argv, env []string, dir string) (*mountProc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	// A peer's daemon exits once its filesystem is unmounted (how each
	// tool's docs say to stop it).
	return startProc(ctx, cmd, mountproc.Options{Mountpoint: dir, Label: argv[0],
		NoReadyLine: true, UnmountToStop: true, Log: &mountproc.Log{Max: 16 << 10}})
}

// runPeerScenario does a cold pass on a fresh mount of the peer (with an
// empty cache directory when it has one), a warm pass on the same mount,
// the spot check, and stops it.
func (b *bench) runPeerScenario(ctx context.Context, mode peerMode, name string) error {
	spec := b.spec(name)
	cacheDir := filepath.Join(b.cache, diskCachePrefix+"peer-"+mode.Name)
	if err := os.RemoveAll(cacheDir); err != nil {
		return fmt.Errorf("clearing %s: %w", cacheDir, err)
	}
	if err := os.Mkdir(cacheDir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(cacheDir)
	argv, extra := b.peerCommand(mode, spec.prefix, b.mnt, cacheDir)
	st0, err := b.remote.stats(ctx)
	if err != nil {
		return err
	}
	mp, err := startPeerMount(ctx, argv, append(slices.Clone(b.env), extra...), b.mnt)
	if err != nil {
		return err
	}
	names := []string{"cold"}
	if b.cfg.warm {
		names = append(names, "warm")
	}
	var out []sample
	for _, pass := range names {
		s, err := b.measure(ctx, mp, func() (int64, error) { return spec.read(ctx, b.mnt) })
		if err != nil {
			_, serr := mp.stop()
			return errors.Join(fmt.Errorf("%s pass: %w", pass, err), serr)
		}
		if spec.header != nil {
			h := *spec.header
			s.Header = &h
		}
		out = append(out, s)
	}
	u, err := mp.stop()
	if err != nil {
		return err
	}
	if err := b.lifeStats(ctx, st0, out); err != nil {
		return err
	}
	// The spot check on a mount of its own, as for modelfs.
	if b.cfg.verify {
		mp, err := startPeerMount(ctx, argv, append(slices.Clone(b.env), extra...), b.mnt)
		if err != nil {
			return fmt.Errorf("mounting for the spot check: %w", err)
		}
		err = spec.verify(b.mnt)
		if _, serr := mp.stop(); err != nil || serr != nil {
			return errors.Join(err, serr)
		}
	}
	out[0].MountCPUExit, out[0].MountPeakRSS = u.CPUSeconds, u.MaxRSS
	b.recordPeer(name, "cold", mode.Name, spec.rawRef, "", out[0])
	if len(out) > 1 {
		out[1].MountPeakRSS = u.MaxRSS
		b.recordPeer(name, "warm", mode.Name, "", spec.localRef, out[1])
	}
	return nil
}
