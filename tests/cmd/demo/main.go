// Command demo runs modelfs end to end on this machine: it starts the test
// S3 server on loopback, uploads a generated Llama-style sharded
// safetensors model through the AWS SDK, mounts it with modelfs, reads it
// with ordinary readers (cat, sha256sum, and mmapread, which mmaps each
// shard and touches every tensor), and reports cold and warm times and
// whether the bytes are identical.
//
// With -serve it stops after the upload instead, keeps the server running
// until SIGINT or SIGTERM, and prints the commands to mount the model by
// hand (see serve.go).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/internal/units"
	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/mountproc"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	accessKey = "AKIADEMO000000000000"
	secretKey = "demo-secret-key-for-the-loopback-server"
	region    = "us-east-1"
	bucket    = "models"
	prefix    = "llama-demo/"
)

func main() {
	modelfsBin := flag.String("modelfs", "bin/modelfs", "modelfs binary")
	mmapread := flag.String("mmapread", "bin/mmapread", "mmapread binary")
	dir := flag.String("dir", ".demo", "work directory (model, server data, mountpoint)")
	size := flag.Int64("size", 384<<20, "approximate model size in bytes")
	serveMode := flag.Bool("serve", false, "keep the S3 server running and print the commands to try, instead of the demo")
	addr := flag.String("addr", "", "with -serve: `host:port` for the S3 server (default 127.0.0.1:9000)")
	flag.Parse()
	var err error
	if *serveMode {
		if *addr == "" {
			*addr = "127.0.0.1:9000"
		}
		err = serve(*modelfsBin, *dir, *addr, *size)
	} else {
		err = run(*modelfsBin, *mmapread, *dir, *size)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// served is the generated model, uploaded to a running S3 server.
type served struct {
	srv    *s3server.Server
	source string            // s3://bucket/prefix/
	files  []string          // relative to the model
	want   map[string]string // file -> sha256
	total  int64             // bytes in all files
}

// prepare generates the model under dir/model, starts the S3 server on
// addr with its data under dir/s3, and uploads the model through the SDK.
func prepare(ctx context.Context, dir, addr string, size int64) (*served, error) {
	if err := os.RemoveAll(filepath.Join(dir, "s3")); err != nil {
		return nil, fmt.Errorf("cleaning %s: %w", filepath.Join(dir, "s3"), err)
	}
	modelDir := filepath.Join(dir, "model")
	step("generating a Llama-style model (sharded safetensors, config, tokenizer) in %s", modelDir)
	model, err := modelgen.Generate(modelDir, modelgen.Options{TotalBytes: size, Shards: 4, Seed: 1})
	if err != nil {
		return nil, fmt.Errorf("generating the model: %w", err)
	}
	s := &served{source: "s3://" + bucket + "/" + prefix, files: model.Files, want: map[string]string{}}
	for _, f := range model.Files {
		sum, n, err := sha256Of(filepath.Join(modelDir, f))
		if err != nil {
			return nil, err
		}
		s.want[f], s.total = sum, s.total+n
	}
	step("generated %d files, %s", len(s.files), units.FormatSize(s.total))

	srv, err := s3server.New(s3server.Options{Dir: filepath.Join(dir, "s3"), AccessKey: accessKey, SecretKey: secretKey, Region: region})
	if err != nil {
		return nil, fmt.Errorf("creating the S3 server: %w", err)
	}
	if err := srv.Start(addr); err != nil {
		return nil, fmt.Errorf("starting the S3 server on %s: %w", addr, err)
	}
	s.srv = srv
	step("S3 server on %s; uploading %d files through the AWS SDK to %s", srv.URL(), len(s.files), s.source)
	client := s3.New(s3.Options{
		Region: region, BaseEndpoint: aws.String(srv.URL()), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
	})
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		srv.Close()
		return nil, fmt.Errorf("creating bucket %s: %w", bucket, err)
	}
	for _, f := range s.files {
		body, err := os.Open(filepath.Join(modelDir, f))
		if err != nil {
			srv.Close()
			return nil, err
		}
		_, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + f), Body: body})
		body.Close()
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("uploading %s: %w", f, err)
		}
	}
	return s, nil
}

func run(modelfsBin, mmapread, dir string, size int64) error {
	start := time.Now()
	mnt := filepath.Join(dir, "mnt")
	if err := os.RemoveAll(mnt); err != nil {
		return fmt.Errorf("cleaning %s (a stale mount? run '%s unmount %s'): %w", mnt, modelfsBin, mnt, err)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	s, err := prepare(context.Background(), dir, "127.0.0.1:0", size)
	if err != nil {
		return err
	}
	defer s.srv.Close()
	srv, files, want := s.srv, s.files, s.want

	step("mounting %s at %s", s.source, mnt)
	stop, err := mount(modelfsBin, srv.URL(), s.source, mnt)
	if err != nil {
		return err
	}
	srv.ResetStats()
	cold, err := cat(mnt, files, s.total, "pass 1/3, cold cat")
	if err != nil {
		stop()
		return err
	}
	gets := srv.Stats().Gets
	warm, err := cat(mnt, files, s.total, "pass 2/3, warm cat")
	if err == nil {
		err = sha256sum(mnt, files, want)
	}
	if err != nil {
		stop()
		return err
	}
	if err := stop(); err != nil {
		return err
	}

	step("unmounted; remounting with cold caches")
	stop, err = mount(modelfsBin, srv.URL(), s.source, mnt)
	if err != nil {
		return err
	}
	t0 := time.Now()
	out, err := exec.Command(mmapread, "-quiet", mnt).CombinedOutput()
	mmapTime := time.Since(t0)
	if err != nil {
		stop()
		return fmt.Errorf("mmapread: %v\n%s", err, out)
	}
	shards := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasSuffix(f[1], ".safetensors") {
			if want[f[1]] != f[0] {
				stop()
				return fmt.Errorf("mmapread: %s differs from the source", f[1])
			}
			shards++
		}
	}
	step("pass 3/3, mmap after remount: %d shards mapped, every tensor touched, in %.2fs; bytes identical", shards, mmapTime.Seconds())
	if err := stop(); err != nil {
		return err
	}

	fmt.Printf("\n%-34s %8s %10s\n", "read of "+units.FormatSize(s.total), "time", "MB/s")
	rate := func(d time.Duration) float64 { return float64(s.total) / d.Seconds() / 1e6 }
	row := func(what string, d time.Duration) {
		fmt.Printf("%-34s %7.2fs %10.0f\n", what, d.Seconds(), rate(d))
	}
	row("pass 1: cold cat through modelfs", cold)
	row("pass 2: warm cat", warm)
	row("pass 3: mmap after remount", mmapTime)
	fmt.Printf("\n%d ranged GETs for the cold read; all %d files identical to the source (sha256)\n", gets, len(files))
	fmt.Printf("\ndemo passed in %.0fs: %s cold at %.0f MB/s, warm at %.0f MB/s, mmap at %.0f MB/s. "+
		"Files are in %s (make clean removes them); make serve keeps a server up to try modelfs by hand.\n",
		time.Since(start).Seconds(), units.FormatSize(s.total), rate(cold), rate(warm), rate(mmapTime), dir)
	return nil
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// mount starts modelfs mount in the foreground and waits for its ready
// line; the returned stop unmounts it with SIGTERM.
func mount(bin, endpoint, source, mnt string) (stop func() error, err error) {
	cmd := exec.Command(bin, "--log-level", "warn", "mount", "--endpoint", endpoint, "--region", region, source, mnt)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey, "AWS_EC2_METADATA_DISABLED=true")
	// Warnings and errors show as they come, and only those.
	log := &mountproc.Log{Max: 16 << 10, OnLine: func(line string) { fmt.Fprintln(os.Stderr, line) }}
	p, err := mountproc.Start(context.Background(), cmd, mountproc.Options{
		Mountpoint: mnt, Label: "modelfs mount", Log: log,
		ReadyTimeout: 2 * time.Minute, StopTimeout: time.Minute,
	})
	if err != nil {
		return nil, err
	}
	step("%s", p.ReadyLine())
	return func() error {
		_, err := p.Stop()
		return err
	}, nil
}

func paths(mnt string, files []string) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = filepath.Join(mnt, f)
	}
	return out
}

// cat times the plainest reader there is: cat into /dev/null. (sha256sum
// would time the hash: it is slower than the mount on some machines.)
func cat(mnt string, files []string, total int64, label string) (time.Duration, error) {
	cmd := exec.Command("cat", paths(mnt, files)...)
	cmd.Stdout = io.Discard
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: cat through the mount: %w", label, err)
	}
	d := time.Since(t0)
	step("%s: %d files, %s, in %.2fs", label, len(files), units.FormatSize(total), d.Seconds())
	return d, nil
}

// sha256sum runs the system's sha256sum over the mounted files and checks
// each sum against the source.
func sha256sum(mnt string, files []string, want map[string]string) error {
	out, err := exec.Command("sha256sum", paths(mnt, files)...).Output()
	if err != nil {
		return fmt.Errorf("sha256sum through the mount: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		sum, path, ok := strings.Cut(line, "  ")
		rel, _ := filepath.Rel(mnt, path)
		if !ok || want[rel] != sum {
			return fmt.Errorf("%s through the mount differs from the source", rel)
		}
	}
	step("sha256sum of %d files through the mount: all identical to the source", len(files))
	return nil
}

func sha256Of(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
