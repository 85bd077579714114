package e2e

import (
	"strings"
	"testing"
)

// A source flag that means nothing for the source fails the command in
// one line naming the flag, before any request; it is never ignored.
func TestSourceFlagsThatDoNotApplyAreRefused(t *testing.T) {
	cache := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"warm", "--cache-dir", cache, "--region", "europe-west4", "gs://models/llama"},
			"--region applies to s3:// sources, not gs://"},
		{[]string{"warm", "--cache-dir", cache, "--aws-profile", "dev", "az://acct1/models/llama"},
			"--aws-profile applies to s3:// sources, not az://"},
		{[]string{"warm", "--cache-dir", cache, "--endpoint", "http://127.0.0.1:9", "file://" + modelDir},
			"--endpoint applies to s3://, gs:// and az:// sources, not file://"},
		{[]string{"warm", "--cache-dir", cache, "--no-sign-request", "hf://org/name"},
			"--no-sign-request applies to s3://, gs:// and az:// sources, not hf://"},
		{[]string{"warm", "--cache-dir", cache, "--region", "r", "--endpoint", "http://127.0.0.1:9", "file://" + modelDir},
			"--region applies to s3:// sources, not file://; --endpoint applies"},
		{[]string{"pack", "--verify", "--region", "europe-west4", "gs://models/llama"},
			"--region applies to s3:// sources, not gs://"},
		{[]string{"pack", "--region", "westeurope", modelDir, "az://acct1/models/llama"},
			"--region applies to s3:// sources, not az://"},
	} {
		code, stderr := runCLI(t, testEnv(), tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("modelfs %s: exit %d, stderr %q; want a failure saying %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
		if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 0 {
			t.Errorf("modelfs %s: %d lines on stderr, want one:\n%s", strings.Join(tc.args, " "), n+1, stderr)
		}
	}
}
