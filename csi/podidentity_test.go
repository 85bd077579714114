package csi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoleARNAttribute(t *testing.T) {
	base := map[string]string{"source": "s3://models/llama/", "roleArn": "arn:aws:iam::123456789012:role/model-reader"}
	v, err := parseVolume(base)
	if err != nil || v.roleARN != base["roleArn"] {
		t.Fatalf("parse: %+v, %v", v, err)
	}
	for name, attrs := range map[string]map[string]string{
		"not an arn":     {"source": "s3://models/", "roleArn": "model-reader"},
		"a user":         {"source": "s3://models/", "roleArn": "arn:aws:iam::123456789012:user/bob"},
		"an http source": {"source": "https://example.com/m/", "roleArn": base["roleArn"]},
		"unsigned":       {"source": "s3://models/", "roleArn": base["roleArn"], "noSignRequest": "true"},
	} {
		if _, err := parseVolume(attrs); err == nil || !strings.Contains(err.Error(), `"roleArn"`) {
			t.Errorf("%s: %v, want an error naming roleArn", name, err)
		}
	}
	if _, err := parseVolume(map[string]string{"source": "s3://models/", "roleArn": "arn:aws-cn:iam::123456789012:role/path/r"}); err != nil {
		t.Errorf("a China-partition role with a path: %v", err)
	}
}

func TestPodToken(t *testing.T) {
	attrs := map[string]string{serviceAccountTokensKey: `{"sts.amazonaws.com":{"token":"secret-jwt","expirationTimestamp":"2030-01-01T00:00:00Z"},"vault":{"token":"other"}}`}
	if tok, err := podToken(attrs, "sts.amazonaws.com"); err != nil || tok != "secret-jwt" {
		t.Fatalf("podToken = %q, %v", tok, err)
	}
	for name, tc := range map[string]struct {
		attrs    map[string]string
		audience string
		want     string
	}{
		"off":            {attrs, "", "--token-audience"},
		"no tokens":      {map[string]string{}, "sts.amazonaws.com", "tokenRequests"},
		"other audience": {attrs, "minio", `"minio"`},
		"garbled":        {map[string]string{serviceAccountTokensKey: `{"sts.amazonaws.com":`}, "sts.amazonaws.com", "JSON"},
	} {
		_, err := podToken(tc.attrs, tc.audience)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to mention %s", name, err, tc.want)
		} else if strings.Contains(err.Error(), "secret-jwt") {
			t.Errorf("%s: the error quotes the token: %v", name, err)
		}
	}
}

func TestRoleSessionName(t *testing.T) {
	if got := roleSessionName(map[string]string{podUIDKey: "0b1c-22"}, "vol"); got != "modelfs-0b1c-22" {
		t.Errorf("with a pod uid: %q", got)
	}
	got := roleSessionName(nil, "pvc-"+strings.Repeat("x", 80)+"/é")
	if len(got) != 64 || strings.ContainsAny(got, "/é") {
		t.Errorf("from a long volume id: %q (%d)", got, len(got))
	}
}

func TestWriteTokenReplacesAtomically(t *testing.T) {
	m, err := newMounter("/bin/false", t.TempDir(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	const target = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/m/mount"
	for _, tok := range []string{"first", "second"} {
		if err := m.writeToken(target, tok); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(m.tokenPath(target))
		if err != nil || string(b) != tok {
			t.Fatalf("token file %q, %v; want %q", b, err, tok)
		}
		fi, _ := os.Stat(m.tokenPath(target))
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v", fi.Mode().Perm())
		}
	}
	left, _ := filepath.Glob(filepath.Join(m.dir, "*.token-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	m.forget(target)
	if _, err := os.Stat(m.tokenPath(target)); !os.IsNotExist(err) {
		t.Fatalf("forget left the token: %v", err)
	}
}
