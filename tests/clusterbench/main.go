package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/internal/units"
	"github.com/modelfs/modelfs/mount/config"
	"github.com/modelfs/modelfs/tests/linkproxy"
	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	originKey, originSecret = "AKIACLUSTERORIGIN001", "cluster-bench-origin-secret"
	sharedKey, sharedSecret = "AKIACLUSTERSHARED001", "cluster-bench-shared-secret"
	bucket, cacheBucket     = "models", "cluster-cache"
)

type options struct {
	bin           string
	nodes         int
	size          int64
	latency       time.Duration
	originLink    linkproxy.Options
	sharedLink    linkproxy.Options
	blockSize     string
	readyTimeout  time.Duration
	scenarioLimit time.Duration
}

func main() {
	var o options
	var size string
	flag.StringVar(&o.bin, "modelfs", "bin/modelfs", "the modelfs binary")
	flag.IntVar(&o.nodes, "nodes", 8, "mounts loading the model at once")
	flag.StringVar(&size, "size", "512MiB", "model size")
	flag.DurationVar(&o.latency, "origin-latency", 30*time.Millisecond, "added to every GET of the origin: its distance")
	var originMbit, sharedMbit float64
	flag.Float64Var(&originMbit, "origin-mbit", 1000, "the origin's link, shared by every node, in Mbit/s (0: no limit): the WAN link a cluster pulls a model through")
	flag.DurationVar(&o.originLink.RTT, "origin-rtt", 0, "the origin link's round trip, on top of -origin-latency")
	flag.Float64Var(&sharedMbit, "shared-mbit", 0, "the shared store's link, shared by every node, in Mbit/s (0: no limit, loopback)")
	flag.StringVar(&o.blockSize, "block-size", "8MiB", "the mounts' --block-size")
	flag.DurationVar(&o.scenarioLimit, "timeout", 10*time.Minute, "limit for each scenario")
	flag.Parse()
	var err error
	if o.size, err = units.ParseSize(size, "-size"); err != nil || o.size <= 0 {
		fmt.Fprintf(os.Stderr, "clusterbench: -size %q: want a size\n", size)
		os.Exit(2)
	}
	if o.nodes < 1 || o.nodes > 64 {
		fmt.Fprintln(os.Stderr, "clusterbench: -nodes: want 1 to 64")
		os.Exit(2)
	}
	o.originLink.RateBitsPerSec, o.sharedLink.RateBitsPerSec = originMbit*1e6, sharedMbit*1e6
	o.readyTimeout = time.Minute
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	tmp, err := os.MkdirTemp("", "modelfs-clusterbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	modelDir := filepath.Join(tmp, "model")
	fmt.Printf("generating a %s model\n", units.FormatSize(o.size))
	model, err := modelgen.Generate(modelDir, modelgen.Options{TotalBytes: o.size, Seed: 7})
	if err != nil {
		return err
	}
	sums := map[string]string{}
	var total int64
	for _, name := range model.Files {
		sum, n, err := hashFile(filepath.Join(modelDir, name))
		if err != nil {
			return err
		}
		sums[name], total = sum, total+n
	}

	origin, err := startServer(filepath.Join(tmp, "origin"), originKey, originSecret, bucket)
	if err != nil {
		return err
	}
	defer origin.Close()
	for _, name := range model.Files {
		if _, err := origin.PutObjectFromFile(bucket, "model/"+name, filepath.Join(modelDir, name)); err != nil {
			return err
		}
	}
	if o.latency > 0 {
		origin.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet {
				return false
			}
			origin.ServeFault(w, r, s3server.Fault{Kind: s3server.FaultLatency, Delay: o.latency})
			return true
		})
	}
	originURL, stopLink, err := behindLink(origin, o.originLink)
	if err != nil {
		return err
	}
	defer stopLink()
	creds := filepath.Join(tmp, "credentials")
	profile := fmt.Sprintf("[cache]\naws_access_key_id = %s\naws_secret_access_key = %s\n", sharedKey, sharedSecret)
	if err := os.WriteFile(creds, []byte(profile), 0o600); err != nil {
		return err
	}
	env := append(os.Environ(), "AWS_ACCESS_KEY_ID="+originKey, "AWS_SECRET_ACCESS_KEY="+originSecret,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE="+creds)

	fmt.Printf("model: %d files, %s; %d nodes at once; origin GETs +%s each, origin link %s; shared store link %s; block size %s\n\n",
		len(model.Files), units.FormatSize(total), o.nodes, o.latency, linkString(o.originLink), linkString(o.sharedLink), o.blockSize)
	fmt.Printf("%-16s %14s %10s %10s %10s\n", "scenario", "origin/model", "median s", "max s", "min s")
	for _, withShared := range []bool{false, true} {
		name, extra := "no shared tier", []string(nil)
		var shared *s3server.Server
		if withShared {
			shared, err = startServer(filepath.Join(tmp, "shared"), sharedKey, sharedSecret, cacheBucket)
			if err != nil {
				return err
			}
			name = "shared tier"
			sharedURL, stopShared, err := behindLink(shared, o.sharedLink)
			if err != nil {
				shared.Close()
				return err
			}
			defer stopShared()
			extra = []string{"--shared-cache", "s3://" + cacheBucket + "/blocks", "--shared-cache-endpoint", sharedURL, "--shared-cache-profile", "cache"}
		}
		origin.ResetStats()
		times, logs, err := scenario(o, env, filepath.Join(tmp, name), originURL, extra, sums)
		if shared != nil {
			shared.Close()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		slices.Sort(times)
		ratio := float64(origin.Stats().BytesServed) / float64(total)
		fmt.Printf("%-16s %13.2fx %10.2f %10.2f %10.2f\n", name, ratio,
			times[len(times)/2].Seconds(), times[len(times)-1].Seconds(), times[0].Seconds())
		each := make([]string, len(times))
		for i, d := range times {
			each[i] = fmt.Sprintf("%.2f", d.Seconds())
		}
		fmt.Printf("  (each node, s: %s)\n", strings.Join(each, " "))
		if withShared {
			printShared(logs)
		}
	}
	return nil
}

// behindLink is srv's endpoint through an emulated link, when link sets
// one, and a function that closes the link.
func behindLink(srv *s3server.Server, link linkproxy.Options) (string, func(), error) {
	if !link.Enabled() {
		return srv.URL(), func() {}, nil
	}
	p, err := linkproxy.Start("127.0.0.1:0", strings.TrimPrefix(srv.URL(), "http://"), link)
	if err != nil {
		return "", nil, err
	}
	return "http://" + p.Addr(), func() { p.Close() }, nil
}

func linkString(l linkproxy.Options) string {
	if !l.Enabled() {
		return "unlimited"
	}
	s := "unlimited"
	if l.RateBitsPerSec > 0 {
		s = fmt.Sprintf("%g Mbit/s", l.RateBitsPerSec/1e6)
	}
	if l.RTT > 0 {
		s += fmt.Sprintf(", RTT %s", l.RTT)
	}
	return s
}

func startServer(dir, key, secret, name string) (*s3server.Server, error) {
	srv, err := s3server.New(s3server.Options{Dir: dir, AccessKey: key, SecretKey: secret})
	if err != nil {
		return nil, err
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	if err := srv.CreateBucket(name); err != nil {
		srv.Close()
		return nil, err
	}
	return srv, nil
}

// scenario runs o.nodes mounts at once, each reading and checking every
// file, and returns each node's time from its start to its last check,
// and its log.
func scenario(o options, env []string, dir, originURL string, extra []string, sums map[string]string) ([]time.Duration, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.scenarioLimit)
	defer cancel()
	times := make([]time.Duration, o.nodes)
	logs := make([]string, o.nodes)
	errs := make([]error, o.nodes)
	var wg sync.WaitGroup
	for i := range o.nodes {
		wg.Go(func() {
			start := time.Now()
			node := filepath.Join(dir, fmt.Sprintf("node%d", i))
			logs[i], errs[i] = loadOnNode(ctx, o, env, node, originURL, extra, sums)
			times[i] = time.Since(start)
		})
	}
	wg.Wait()
	return times, logs, errors.Join(errs...)
}

// loadOnNode mounts the model with a cache of its own, reads every file
// through the mount, checks it, and unmounts.
func loadOnNode(ctx context.Context, o options, env []string, node, originURL string, extra []string, sums map[string]string) (string, error) {
	var stderr strings.Builder
	err := mountAndRead(ctx, o, env, node, originURL, extra, sums, &syncWriter{w: &stderr})
	return stderr.String(), err
}

// sharedCounter is one shared_* counter of a mount's unmount line.
var sharedCounter = regexp.MustCompile(`\b(shared_[a-z_]+)=(\d+)`)

// printShared sums the nodes' shared-tier counters.
func printShared(logs []string) {
	sum := map[string]int64{}
	var names []string
	for _, l := range logs {
		i := strings.Index(l, "msg=unmounted")
		if i < 0 {
			continue
		}
		for _, m := range sharedCounter.FindAllStringSubmatch(l[i:], -1) {
			n, _ := strconv.ParseInt(m[2], 10, 64)
			if _, ok := sum[m[1]]; !ok {
				names = append(names, m[1])
			}
			sum[m[1]] += n
		}
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, sum[n])
	}
	fmt.Printf("  (all nodes: %s)\n", strings.Join(parts, " "))
}

func mountAndRead(ctx context.Context, o options, env []string, node, originURL string, extra []string, sums map[string]string, stderr *syncWriter) error {
	mnt, cache := filepath.Join(node, "mnt"), filepath.Join(node, "cache")
	for _, d := range []string{mnt, cache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	args := append([]string{"mount", "--endpoint", originURL, "--region", "us-east-1", "--cache-dir", cache, "--block-size", o.blockSize}, extra...)
	cmd := exec.CommandContext(ctx, o.bin, append(args, "s3://"+bucket+"/model", mnt)...)
	cmd.Env = env
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), config.ReadyPrefix) {
				close(ready)
				break
			}
		}
		io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	stop := func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			return errors.New("mount did not exit within a minute of SIGTERM")
		}
	}
	select {
	case <-ready:
	case err := <-done:
		return fmt.Errorf("mount exited before ready: %v\n%s", err, stderr.String())
	case <-time.After(o.readyTimeout):
		stop()
		return fmt.Errorf("mount not ready\n%s", stderr.String())
	}
	var readErr error
	for name, want := range sums {
		got, _, err := hashFile(filepath.Join(mnt, name))
		if err == nil && got != want {
			err = fmt.Errorf("%s: sha256 through the mount differs from the model", name)
		}
		if err != nil {
			readErr = err
			break
		}
	}
	if err := stop(); err != nil && readErr == nil {
		readErr = fmt.Errorf("unmount: %v\n%s", err, stderr.String())
	}
	return readErr
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// syncWriter collects a process's output; String reads it.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.(fmt.Stringer).String()
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
