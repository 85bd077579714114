package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runCLI runs modelfs with a deadline and returns its exit code and stderr.
func runCLI(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	code, _, stderr := runCLIEnv(t, env, args...)
	return code, stderr
}

// runCLIOutput runs modelfs with the test credentials and returns its exit
// code, stdout and stderr.
func runCLIOutput(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLIEnv(t, testEnv(), args...)
}

func runCLIEnv(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, modelfsBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("modelfs %v hung for 60s", args)
	}
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func TestBadInputGetsOneLineError(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	if err := r.srv.CreateBucket("empty-bucket"); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	ep := r.mountArgs()
	wrongCreds := append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	unknownKey := append(os.Environ(), "AWS_ACCESS_KEY_ID=AKIAUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY="+secretKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	cases := []struct {
		name     string
		env      []string
		args     []string
		mentions string
	}{
		{"unknown scheme", nil, []string{"mount", "ftp://bucket/x", mnt}, "unknown scheme"},
		{"malformed URI", nil, []string{"mount", "s3//bucket", mnt}, "not a URI"},
		{"bad bucket name", nil, []string{"mount", "s3://a/x", mnt}, "bucket name"},
		{"missing bucket", nil, append(ep, "mount", "s3://no-such-bucket/x", mnt), "does not exist"},
		{"wrong secret", wrongCreds, append(ep, "mount", "s3://"+bucket+"/llama", mnt), "access denied"},
		{"unknown access key", unknownKey, append(ep, "mount", "s3://"+bucket+"/llama", mnt), "access denied"},
		{"nonexistent mountpoint", nil, append(ep, "mount", "s3://"+bucket+"/llama", mnt+"/nope"), "does not exist"},
		{"empty bucket", nil, append(ep, "mount", "s3://empty-bucket", mnt), "no objects"},
		{"empty prefix", nil, append(ep, "mount", "s3://"+bucket+"/nothing-here/", mnt), "no objects"},
		{"missing mountpoint argument", nil, []string{"mount", "s3://" + bucket}, "two arguments"},
		{"bad size flag", nil, []string{"mount", "--block-size", "lots", "s3://" + bucket, mnt}, "--block-size"},
		{"bad prefetch flag", nil, []string{"mount", "--prefetch", "maybe", "s3://" + bucket, mnt}, "--prefetch"},
		{"unmount of a plain dir", nil, []string{"unmount", mnt}, "not mounted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			if env == nil {
				env = testEnv()
			}
			// The mount subcommand's flags come after "mount".
			args := tc.args
			if args[0] != "mount" && args[0] != "unmount" {
				args = append([]string{"mount"}, withoutMount(args)...)
			}
			code, stderr := runCLI(t, env, args...)
			if code == 0 {
				t.Fatalf("exit 0, want non-zero; stderr: %q", stderr)
			}
			line := strings.TrimSpace(stderr)
			if strings.Count(line, "\n") != 0 {
				t.Errorf("want one line of error, got:\n%s", stderr)
			}
			if !strings.Contains(strings.ToLower(line), strings.ToLower(tc.mentions)) {
				t.Errorf("error %q does not mention %q", line, tc.mentions)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
				t.Errorf("panicked:\n%s", stderr)
			}
			if strings.Contains(stderr, secretKey) || strings.Contains(stderr, "wrong-secret") {
				t.Errorf("error leaks the secret key: %s", stderr)
			}
		})
	}
}

// withoutMount moves "mount" out of an argument list built as flags first.
func withoutMount(args []string) []string {
	var out []string
	for _, a := range args {
		if a != "mount" {
			out = append(out, a)
		}
	}
	return out
}

func TestMountpointAlreadyMounted(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	code, stderr := runCLI(t, testEnv(), append(append([]string{"mount"}, r.mountArgs()...), "s3://"+bucket, m.dir)...)
	if code == 0 || !strings.Contains(stderr, "already mounted") {
		t.Fatalf("second mount on %s: exit %d, %q; want an 'already mounted' error", m.dir, code, stderr)
	}
}

func TestSIGTERMUnmountsCleanly(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	if _, err := os.Stat(m.path(model.Files[0])); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	if mounted(t, m.dir) {
		t.Fatal("still mounted after SIGTERM")
	}
}

func TestUnmountClearsStaleMount(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	m.Kill()
	if _, err := os.Stat(m.path(model.Files[0])); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9, stat = %v, want ENOTCONN (a stale mount)", err)
	}
	// A new mount refuses the stale mountpoint and says what to do.
	code, stderr := runCLI(t, testEnv(), append(append([]string{"mount"}, r.mountArgs()...), "s3://"+bucket, m.dir)...)
	if code == 0 || !strings.Contains(stderr, "modelfs unmount") {
		t.Fatalf("mount on a stale mountpoint: exit %d, %q", code, stderr)
	}
	if code, stderr := runCLI(t, testEnv(), "unmount", m.dir); code != 0 {
		t.Fatalf("unmount of a stale mount: exit %d: %s", code, stderr)
	}
	if mounted(t, m.dir) {
		t.Fatal("still mounted after modelfs unmount")
	}
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
