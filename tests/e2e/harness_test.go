package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/mountproc"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	accessKey = "AKIAMODELFSTEST00001"
	secretKey = "modelfs-test-secret-key-do-not-leak-0001"
	bucket    = "models"
	region    = "us-east-1"
)

// Built once for the package: the binary under test and a generated model.
var (
	modelfsBin string
	mmapBin    string // tests/cmd/mmapread: faults through mmap in its own process
	modelDir   string
	model      *modelgen.Model
	fuseReason string // why FUSE mounts cannot run here, if they cannot
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "modelfs-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	modelfsBin, mmapBin = filepath.Join(tmp, "modelfs"), filepath.Join(tmp, "mmapread")
	for bin, pkg := range map[string]string{modelfsBin: "cmd/modelfs", mmapBin: "tests/cmd/mmapread"} {
		build := exec.Command("go", "build", "-o", bin, "github.com/modelfs/modelfs/"+pkg)
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			return 1
		}
	}
	modelDir = filepath.Join(tmp, "model")
	model, err = modelgen.Generate(modelDir, modelgen.Options{TotalBytes: 48 << 20, Shards: 3, Layers: 4, Seed: 42})
	if err != nil {
		fmt.Fprintf(os.Stderr, "generating model: %v\n", err)
		return 1
	}
	fuseReason = mountproc.FuseUnavailable()
	return m.Run()
}

func needFuse(t *testing.T) {
	t.Helper()
	if fuseReason != "" {
		t.Skip("skipping: " + fuseReason)
	}
}

// remote is an S3 server on loopback holding a copy of the model.
type remote struct {
	srv    *s3server.Server
	client *s3.Client
}

func newRemote(t *testing.T) *remote {
	t.Helper()
	srv, err := s3server.New(s3server.Options{Dir: t.TempDir(), AccessKey: accessKey, SecretKey: secretKey, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	client := s3.New(s3.Options{
		Region:       region,
		BaseEndpoint: aws.String(srv.URL()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
	})
	return &remote{srv: srv, client: client}
}

// uploadModel puts every model file under prefix through the SDK.
func (r *remote) uploadModel(t *testing.T, prefix string) {
	t.Helper()
	ctx := context.Background()
	if _, err := r.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		var owned interface{ ErrorCode() string }
		if !errors.As(err, &owned) || owned.ErrorCode() != "BucketAlreadyOwnedByYou" {
			t.Fatal(err)
		}
	}
	for _, name := range model.Files {
		f, err := os.Open(filepath.Join(modelDir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + name), Body: f})
		f.Close()
		if err != nil {
			t.Fatalf("uploading %s: %v", name, err)
		}
	}
	r.srv.ResetStats()
}

// mount is a running `modelfs mount` process.
type mount struct {
	dir string
	*mountproc.Proc
}

// mountArgs are the flags every test mount uses to reach the remote.
func (r *remote) mountArgs() []string {
	return []string{"--endpoint", r.srv.URL(), "--region", region}
}

// env is the process environment with the test credentials.
func testEnv() []string {
	return append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
}

// startMount runs modelfs mount and waits for its ready line.
func startMount(t *testing.T, source string, args ...string) *mount {
	t.Helper()
	return startMountEnv(t, testEnv(), source, args...)
}

// startMountEnv is startMount with the process environment env.
func startMountEnv(t *testing.T, env []string, source string, args ...string) *mount {
	t.Helper()
	m, err := tryMount(t, env, source, args...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tryMount runs modelfs mount with env and returns the mount once ready;
// a mount that exits first is a *mountproc.ExitError.
func tryMount(t *testing.T, env []string, source string, args ...string) (*mount, error) {
	t.Helper()
	needFuse(t)
	dir := t.TempDir()
	cmd := exec.Command(modelfsBin, append(append([]string{"mount"}, args...), source, dir)...)
	cmd.Env = env
	p, err := mountproc.Start(context.Background(), cmd, mountproc.Options{Mountpoint: dir, Label: "modelfs mount"})
	if err != nil {
		return nil, err
	}
	m := &mount{dir: dir, Proc: p}
	t.Cleanup(func() { m.stop(t) })
	return m, nil
}

// exitLog is the stderr of a mount that exited before it was ready; any
// other failure to start fails the test.
func exitLog(t *testing.T, err error) string {
	t.Helper()
	var ee *mountproc.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("modelfs mount neither ready nor failed: %v", err)
	}
	return ee.Log
}

// stop unmounts with SIGTERM and waits for a clean exit; after Kill it
// only clears the stale mount.
func (m *mount) stop(t *testing.T) {
	t.Helper()
	if _, err := m.Stop(); err != nil {
		t.Error(err)
	}
}

func (m *mount) path(name string) string { return filepath.Join(m.dir, name) }

// syncBuffer collects a process's output for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sourceBytes returns a model file's true content.
func sourceBytes(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// biggest returns the largest model file.
func biggest(t *testing.T) string {
	t.Helper()
	best, size := "", int64(-1)
	for _, f := range model.Files {
		st, err := os.Stat(filepath.Join(modelDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > size {
			best, size = f, st.Size()
		}
	}
	return best
}

// waitForCondition polls cond, bounded in time, for conditions that live
// outside this process (files, mounts) and so have nothing to wait on.
func waitForCondition(t *testing.T, what string, cond func() bool) {
	t.Helper()
	mountproc.WaitFor(t, what, 30*time.Second, cond)
}

// dirNames lists a directory's entry names, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
