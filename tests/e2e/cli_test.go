package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/modelfs/modelfs/mount/config"
)

// Exit statuses: 2 for a mistake on the command line, with one line on
// stderr and nothing on stdout; 1 for a failure at run time.
func TestExitStatuses(t *testing.T) {
	mnt := t.TempDir()
	// No MODELFS_* from the caller's environment: they would set flags.
	var env []string
	for _, kv := range testEnv() {
		if !strings.HasPrefix(kv, "MODELFS_") {
			env = append(env, kv)
		}
	}
	cases := []struct {
		name     string
		args     []string
		code     int
		mentions string
	}{
		{"unknown global flag", []string{"--bogus", "stats", mnt}, 2, "unknown flag --bogus"},
		{"unknown mount flag", []string{"mount", "--bogus", "s3://b/x", mnt}, 2, "unknown flag --bogus"},
		{"unknown command", []string{"mout", "s3://b/x", mnt}, 2, `unknown command "mout"`},
		{"unknown cache command", []string{"cache", "rm"}, 2, `unknown command "rm"`},
		{"unknown help topic", []string{"help", "mout"}, 2, "mout"},
		{"argument to version", []string{"version", "now"}, 2, "no arguments"},
		{"missing mountpoint", []string{"mount", "s3://b/x"}, 2, "two arguments"},
		{"missing stats argument", []string{"stats"}, 2, "one argument"},
		{"missing required flag", []string{"cache", "ls"}, 2, "cache ls: --cache-dir is required"},
		{"missing shared required flag", []string{"cache", "drop", "--all"}, 2, "cache drop: --cache-dir is required"},
		{"missing second required flag", []string{"cache", "gc", "--cache-dir", mnt}, 2, "cache gc: --size is required"},
		{"bad integer flag", []string{"mount", "--concurrency", "many", "s3://b/x", mnt}, 2, `--concurrency "many"`},
		{"bad duration flag", []string{"mount", "--request-timeout", "soon", "s3://b/x", mnt}, 2, `--request-timeout "soon"`},
		{"bad size flag", []string{"mount", "--block-size", "lots", "s3://b/x", mnt}, 2, "--block-size"},
		{"bad enum flag", []string{"mount", "--prefetch", "maybe", "s3://b/x", mnt}, 2, "--prefetch"},
		{"bad log format", []string{"--log-format", "xml", "stats", mnt}, 2, "--log-format"},
		{"stats of a plain directory", []string{"stats", mnt}, 1, "not a modelfs mount"},
		{"unmount of a plain directory", []string{"unmount", mnt}, 1, "not mounted"},
		{"nonexistent mountpoint", []string{"mount", "file://" + modelDir, mnt + "/nope"}, 1, "does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLIEnv(t, env, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if tc.code == 2 && stdout != "" {
				t.Errorf("a usage error printed to stdout:\n%s", stdout)
			}
			line := strings.TrimSpace(stderr)
			if strings.Contains(line, "\n") {
				t.Errorf("want one line on stderr, got:\n%s", stderr)
			}
			if !strings.HasPrefix(line, config.ErrorPrefix) || !strings.Contains(line, tc.mentions) {
				t.Errorf("stderr %q, want \"modelfs: ...%s...\"", line, tc.mentions)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, stderr := runCLIEnv(t, testEnv(), args...)
		if code != 0 || stderr != "" {
			t.Errorf("modelfs %v: exit %d, stderr %q", args, code, stderr)
		}
		v, ok := strings.CutPrefix(strings.TrimSpace(stdout), "modelfs version ")
		if !ok || v == "" || strings.Contains(v, "\n") {
			t.Errorf("modelfs %v printed %q, want one line \"modelfs version V\"", args, stdout)
		}
	}
}

// With no credentials anywhere, the SDK's chain ends at the instance
// role. A machine without one answers its metadata requests with 403s
// (here a stand-in server, so the test never asks a real one): the error
// must say credentials are missing and how to give them, and the SDK's
// own warnings must come through --log-format json.
func TestMissingCredentialsNameTheWays(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	var imdsHits atomic.Int64
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		imdsHits.Add(1)
		w.WriteHeader(http.StatusForbidden)
	}))
	defer imds.Close()

	env := []string{"HOME=" + t.TempDir(), "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imds.URL,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	args := append([]string{"--log-format", "json", "mount"}, r.mountArgs()...)
	code, _, stderr := runCLIEnv(t, env, append(args, "s3://"+bucket+"/llama", t.TempDir())...)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if imdsHits.Load() == 0 {
		t.Fatal("the instance metadata stand-in was never asked: the test does not cover the instance role fallback")
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		if !json.Valid([]byte(l)) {
			t.Errorf("log line is not JSON despite --log-format json: %q", l)
		}
	}
	for _, want := range []string{"no AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "--aws-profile", "web identity", "--no-sign-request"} {
		if !strings.Contains(last, want) {
			t.Errorf("error %q does not mention %q", last, want)
		}
	}
	if strings.Contains(last, "get identity") {
		t.Errorf("error %q repeats the SDK's middleware chain", last)
	}
}
