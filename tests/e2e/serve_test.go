package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/tests/mountproc"
)

func buildDemo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/modelfs/modelfs/tests/cmd/demo").CombinedOutput(); err != nil {
		t.Fatalf("building tests/cmd/demo: %v\n%s", err, out)
	}
	return bin
}

// The demo labels each pass, reports one size for the model wherever it
// names it, and ends with a summary saying where its files are.
func TestDemoReport(t *testing.T) {
	needFuse(t)
	dir := filepath.Join(t.TempDir(), "demo-dir")
	cmd := exec.Command(buildDemo(t), "-modelfs", modelfsBin, "-mmapread", mmapBin, "-dir", dir, "-size", "8388608")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"pass 1/3, cold cat:", "pass 2/3, warm cat:", "pass 3/3, mmap after remount:", "all identical to the source"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in the demo's output:\n%s", want, text)
		}
	}
	// "generated 9 files, 8.1 MiB" and each "ready: ... (9 files, 8.1 MiB)".
	var generated string
	readies := 0
	for _, line := range strings.Split(text, "\n") {
		if g, ok := strings.CutPrefix(line, "==> generated "); ok {
			generated = g
		}
		if strings.HasPrefix(line, "==> ready: ") {
			readies++
			if generated == "" || !strings.HasSuffix(line, "("+generated+")") {
				t.Errorf("mounted size %q differs from the generated %q", line, generated)
			}
		}
	}
	if readies != 2 {
		t.Errorf("%d ready lines, want 2 (mount, remount):\n%s", readies, text)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "demo passed") || !strings.Contains(last, dir) || !strings.Contains(last, "make clean") {
		t.Errorf("last line %q, want a summary naming %s and make clean", last, dir)
	}
}

// TestServeCommandsWork runs `make serve`'s program (tests/cmd/demo
// -serve) and then the commands it prints, as printed: mount in the
// background, read, stats, unmount, warm. Its server must also take an
// upload, which the mount then shows.
func TestServeCommandsWork(t *testing.T) {
	needFuse(t)
	tmp := t.TempDir()
	demoBin := buildDemo(t)
	dir := filepath.Join(tmp, "demo-dir")
	srv := exec.Command(demoBin, "-serve", "-modelfs", modelfsBin, "-dir", dir, "-addr", "127.0.0.1:0", "-size", "8388608")
	srv.Stderr = os.Stderr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	defer func() {
		if srv.ProcessState == nil {
			srv.Process.Kill()
		}
	}()

	// The instructions end with the upload example.
	out := bufio.NewReader(stdout)
	var printed, cmds []string
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("serve exited before printing its commands (%v); printed:\n%s", err, strings.Join(printed, ""))
		}
		printed = append(printed, line)
		if c, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "  "); ok {
			cmds = append(cmds, c)
			if strings.HasPrefix(c, "aws ") {
				break
			}
		}
	}
	go func() {
		io.Copy(io.Discard, out)
		exited <- srv.Wait()
	}()
	find := func(word string) string {
		t.Helper()
		for _, c := range cmds {
			if strings.Contains(c, word) {
				return c
			}
		}
		t.Fatalf("no %q command in:\n%s", word, strings.Join(printed, ""))
		return ""
	}

	// The export line is the whole environment the commands need.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + tmp, "AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}
	vars := map[string]string{}
	for _, kv := range strings.Fields(strings.TrimPrefix(find("export "), "export ")) {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
		env = append(env, kv)
	}
	shell := func(line string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", line)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	// An upload with the printed credentials, to the printed endpoint.
	mountLine := find(" mount ")
	endpoint := strings.Fields(mountLine)[3]
	client := s3.New(s3.Options{
		Region: vars["AWS_REGION"], BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(vars["AWS_ACCESS_KEY_ID"], vars["AWS_SECRET_ACCESS_KEY"], ""),
	})
	if _, err := client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String("models"), Key: aws.String("llama-demo/notes.txt"), Body: strings.NewReader("uploaded by hand\n"),
	}); err != nil {
		t.Fatalf("upload to the served endpoint %s: %v", endpoint, err)
	}

	if out, err := shell(find("mkdir ")); err != nil {
		t.Fatalf("mkdir: %v\n%s", err, out)
	}
	// Backgrounded in a terminal; here the test waits for its ready line.
	mnt := strings.Fields(mountLine)[len(strings.Fields(mountLine))-2]
	mountCmd := exec.Command("bash", "-c", strings.TrimSuffix(mountLine, " &"))
	mountCmd.Env = env
	mountProc, err := mountproc.Start(context.Background(), mountCmd, mountproc.Options{Mountpoint: mnt, Label: "the printed mount command"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mountProc.Stop() }) // only a failed test's mount is still up

	sums, err := shell(find("sha256sum "))
	if err != nil {
		t.Fatalf("sha256sum through the mount: %v\n%s", err, sums)
	}
	shards := 0
	for _, line := range strings.Split(strings.TrimSpace(sums), "\n") {
		sum, path, _ := strings.Cut(line, "  ")
		want := sha256File(t, filepath.Join(dir, "model", filepath.Base(path)))
		if sum != want {
			t.Errorf("%s: sha256 %s through the mount, %s generated", path, sum, want)
		}
		shards++
	}
	if shards != 4 {
		t.Errorf("sha256sum read %d shards, want 4:\n%s", shards, sums)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "notes.txt")); err != nil || string(got) != "uploaded by hand\n" {
		t.Errorf("the uploaded object through the mount: %q, %v", got, err)
	}
	if out, err := shell(find(" stats ")); err != nil || !strings.Contains(out, "config.json") {
		t.Errorf("stats: %v\n%s", err, out)
	}
	if out, err := shell(find(" unmount ")); err != nil {
		t.Fatalf("unmount: %v\n%s", err, out)
	}
	select {
	case <-mountProc.Exited():
		if err := mountProc.Err(); err != nil {
			t.Errorf("mount exited with %v after unmount\n%s", err, mountProc.Log())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("mount still running 30s after the printed unmount\n%s", mountProc.Log())
	}
	if mounted(t, mnt) {
		t.Error("still mounted after the printed unmount command")
	}
	if out, err := shell(find(" warm ")); err != nil {
		t.Errorf("warm: %v\n%s", err, out)
	}

	// Ctrl-C stops the server, cleanly.
	if err := srv.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve exited with %v after SIGINT", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve still running 30s after SIGINT")
	}
}
