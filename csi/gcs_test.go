package csi

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// gs:// volumes: parsed, allowed inline by bucket, the endpoint and
// noSignRequest attributes reach the mount.
func TestGCSVolumes(t *testing.T) {
	p, err := ParseInlineSources("s3,gs://models,https://gcs.internal:4443")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		attrs map[string]string
		ok    bool
	}{
		{map[string]string{"source": "gs://models/llama"}, true},
		{map[string]string{"source": "gs://other/llama"}, false},
		{map[string]string{"source": "gs://models/llama", "endpoint": "https://gcs.internal:4443"}, true},
		{map[string]string{"source": "gs://models/llama", "endpoint": "https://elsewhere:4443"}, false},
	} {
		v, err := parseVolume(c.attrs)
		if err != nil {
			t.Fatalf("%v: %v", c.attrs, err)
		}
		if got := p.allows(v); got != c.ok {
			t.Errorf("%v: allowed %v, want %v", c.attrs, got, c.ok)
		}
		if v.shownSource() != c.attrs["source"] {
			t.Errorf("shown as %q", v.shownSource())
		}
	}
	anyGS, err := ParseInlineSources("gs")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := parseVolume(map[string]string{"source": "gs://whatever/x"}); !anyGS.allows(v) {
		t.Error("gs does not allow every bucket")
	}
	if v, _ := parseVolume(map[string]string{"source": "s3://whatever/x"}); anyGS.allows(v) {
		t.Error("gs allows S3 buckets")
	}
	if s3Only, _ := ParseInlineSources("s3,s3://models"); s3Only.allows(&volume{source: "gs://models/x", scheme: "gs"}) {
		t.Error("an S3 rule allows a gs:// bucket of the same name")
	}
	for _, bad := range []string{"gs://models/prefix", "gs://"} {
		if _, err := ParseInlineSources(bad); err == nil {
			t.Errorf("ParseInlineSources(%q) accepted", bad)
		}
	}
	v, err := parseVolume(map[string]string{"source": "gs://models/llama", "endpoint": "http://10.0.0.5:4443", "noSignRequest": "true"})
	if err != nil {
		t.Fatal(err)
	}
	args := v.mountArgs("/t", "", &Options{ProfileDir: t.TempDir()})
	if i := slices.Index(args, "--endpoint"); i < 0 || args[i+1] != "http://10.0.0.5:4443" || !slices.Contains(args, "--no-sign-request") {
		t.Fatalf("mount args %q", args)
	}
	if strings.Contains(strings.Join(args, " "), "gs://") {
		t.Fatalf("the source reached the mount arguments: %q", args)
	}
	for _, bad := range []string{"gs://Models/x", "gs://models/../x", "gs://ab"} {
		if _, err := parseVolume(map[string]string{"source": bad}); err == nil {
			t.Errorf("source %q accepted", bad)
		}
	}
}

const testSAKey = `{"type":"service_account","client_email":"loader@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIsecretsecret\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}`

// A service account key secret reaches the mount process as a 0600 file
// named by GOOGLE_APPLICATION_CREDENTIALS, replacing the /dev/null a mount
// without the node's identity gets, and is removed afterwards; other
// credential types and malformed keys are refused without quoting them.
func TestGCSKeySecret(t *testing.T) {
	if env, err := credentials(map[string]string{secretGCSKey: testSAKey}); err != nil || len(env) != 0 {
		t.Fatalf("credentials: %q, %v; want the key accepted and kept out of the environment", env, err)
	}
	dir := t.TempDir()
	env, remove, err := gcsKeyFile(dir, map[string]string{secretGCSKey: testSAKey})
	if err != nil || len(env) != 1 {
		t.Fatalf("gcsKeyFile: %q, %v", env, err)
	}
	path, ok := strings.CutPrefix(env[0], "GOOGLE_APPLICATION_CREDENTIALS=")
	if !ok || !strings.HasPrefix(path, dir) {
		t.Fatalf("env %q", env)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", st.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != testSAKey {
		t.Fatal("key file does not hold the key")
	}
	// The process sees the volume's key, not /dev/null.
	cmd := exec.Command("/bin/sh", "-c", `printf %s "$GOOGLE_APPLICATION_CREDENTIALS"`)
	cmd.Env = mountEnv([]string{"PATH=/bin:/usr/bin", "GOOGLE_APPLICATION_CREDENTIALS=/node/sa.json"}, false, env)
	if out, err := cmd.Output(); err != nil || string(out) != path {
		t.Fatalf("the mount process sees GOOGLE_APPLICATION_CREDENTIALS=%q (%v), want %q", out, err, path)
	}
	remove()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("key file left after removal: %v", err)
	}
	if env, remove, err := gcsKeyFile(dir, nil); err != nil || env != nil || remove == nil {
		t.Fatalf("no key: %q, %v", env, err)
	}
	for _, bad := range []string{
		`{"type":"external_account","credential_source":{"file":"/etc/shadow"},"private_key":"MIIsecret"}`,
		`{"type":"service_account","private_key":"MIIsecret"}`,
		`MIIsecret not json`,
		strings.Repeat(" ", gcsKeyMax+1),
	} {
		_, _, err := gcsKeyFile(dir, map[string]string{secretGCSKey: bad})
		if err == nil || strings.Contains(err.Error(), "MIIsecret") || !strings.Contains(err.Error(), secretGCSKey) {
			t.Errorf("key %.40q: %v", bad, err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "keys")); len(entries) != 0 {
		t.Fatalf("refused keys left files: %v", entries)
	}
}
