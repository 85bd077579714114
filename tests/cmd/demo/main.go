// Command demo runs modelfs end to end on this machine: it starts the test
// S3 server on loopback, uploads a generated Llama-style sharded
// safetensors model through the AWS SDK, mounts it with modelfs, reads it
// with ordinary readers (sha256sum, and mmapread, which mmaps each shard
// and touches every tensor), and reports cold and warm times and whether
// the bytes are identical.
package main

import (
	"bufio"
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
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	accessKey = "AKIADEMO000000000000"
	secretKey = "demo-secret-key-for-the-loopback-server"
	bucket    = "models"
	prefix    = "llama-demo/"
)

func main() {
	modelfsBin := flag.String("modelfs", "bin/modelfs", "modelfs binary")
	mmapread := flag.String("mmapread", "bin/mmapread", "mmapread binary")
	dir := flag.String("dir", ".demo", "work directory (model, server data, mountpoint)")
	size := flag.Int64("size", 384<<20, "model size in bytes")
	flag.Parse()
	if err := run(*modelfsBin, *mmapread, *dir, *size); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(modelfsBin, mmapread, dir string, size int64) error {
	ctx := context.Background()
	for _, d := range []string{"s3", "mnt"} {
		if err := os.RemoveAll(filepath.Join(dir, d)); err != nil {
			return fmt.Errorf("cleaning %s (a stale mount? run 'modelfs unmount %s'): %w", d, filepath.Join(dir, "mnt"), err)
		}
	}
	modelDir, mnt := filepath.Join(dir, "model"), filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}

	step("generating a %s Llama-style model (sharded safetensors)", mib(size))
	model, err := modelgen.Generate(modelDir, modelgen.Options{TotalBytes: size, Shards: 4, Seed: 1})
	if err != nil {
		return err
	}
	want := map[string]string{}
	var total int64
	for _, f := range model.Files {
		sum, n, err := sha256Of(filepath.Join(modelDir, f))
		if err != nil {
			return err
		}
		want[f], total = sum, total+n
	}

	srv, err := s3server.New(s3server.Options{Dir: filepath.Join(dir, "s3"), AccessKey: accessKey, SecretKey: secretKey})
	if err != nil {
		return err
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		return err
	}
	defer srv.Close()
	step("S3 server on %s; uploading %d files through the AWS SDK", srv.URL(), len(model.Files))
	client := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL()), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
	})
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return err
	}
	for _, f := range model.Files {
		body, err := os.Open(filepath.Join(modelDir, f))
		if err != nil {
			return err
		}
		_, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + f), Body: body})
		body.Close()
		if err != nil {
			return fmt.Errorf("uploading %s: %w", f, err)
		}
	}

	source := "s3://" + bucket + "/" + prefix
	stop, err := mount(modelfsBin, srv.URL(), source, mnt)
	if err != nil {
		return err
	}
	srv.ResetStats()
	cold, err := cat(mnt, model.Files)
	if err != nil {
		stop()
		return err
	}
	gets := srv.Stats().Gets
	warm, err := cat(mnt, model.Files)
	if err == nil {
		err = sha256sum(mnt, model.Files, want)
	}
	if err != nil {
		stop()
		return err
	}
	if err := stop(); err != nil {
		return err
	}

	step("remounting cold; mmapread maps each shard and touches every tensor in header order")
	stop, err = mount(modelfsBin, srv.URL(), source, mnt)
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
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasSuffix(f[1], ".safetensors") && want[f[1]] != f[0] {
			stop()
			return fmt.Errorf("mmapread: %s differs from the source", f[1])
		}
	}
	if err := stop(); err != nil {
		return err
	}

	fmt.Printf("\n%-34s %8s %10s\n", "read of "+mib(total), "time", "MB/s")
	row := func(what string, d time.Duration) {
		fmt.Printf("%-34s %7.2fs %10.0f\n", what, d.Seconds(), float64(total)/d.Seconds()/1e6)
	}
	row("cold: cat through modelfs", cold)
	row("warm: cat again", warm)
	row("cold: mmap + touch every tensor", mmapTime)
	fmt.Printf("\n%d ranged GETs for the cold read; bytes identical: all %d files match the source (sha256)\n", gets, len(model.Files))
	return nil
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// mount starts modelfs mount in the foreground and waits for its ready
// line; the returned stop unmounts it with SIGTERM.
func mount(bin, endpoint, source, mnt string) (stop func() error, err error) {
	cmd := exec.Command(bin, "--log-level", "warn", "mount", "--endpoint", endpoint, source, mnt)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey, "AWS_EC2_METADATA_DISABLED=true")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready:") {
				ready <- sc.Text()
			}
		}
		io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	select {
	case line := <-ready:
		step("%s", line)
	case err := <-done:
		return nil, fmt.Errorf("modelfs mount failed: %v", err)
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		return nil, fmt.Errorf("modelfs mount not ready after 2 minutes")
	}
	return func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("modelfs mount exited with %v", err)
			}
			return nil
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			return fmt.Errorf("modelfs did not unmount within a minute of SIGTERM")
		}
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
func cat(mnt string, files []string) (time.Duration, error) {
	cmd := exec.Command("cat", paths(mnt, files)...)
	cmd.Stdout = io.Discard
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("cat through the mount: %w", err)
	}
	d := time.Since(t0)
	step("cat of %d files through the mount: %.2fs", len(files), d.Seconds())
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
