package fetch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// IDs name what a source serves, never a secret, and differ whenever the
// objects may differ.
func TestSourceIDs(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := NewLocal(LocalOptions{Root: "file://" + dir + "/m"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewLocal(LocalOptions{Root: dir + "/./x/../m/"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.ID() != b.ID() {
		t.Errorf("one directory, two IDs: %q and %q", a.ID(), b.ID())
	}

	httpID := func(u string) string {
		t.Helper()
		h, err := NewHTTP(HTTPOptions{URL: u, Token: "tok-secret"})
		if err != nil {
			t.Fatal(err)
		}
		return h.ID()
	}
	signed := httpID("https://user:pw-secret@host/dir/w.bin?X-Sig=sig-secret")
	for _, secret := range []string{"pw-secret", "sig-secret", "tok-secret", "user"} {
		if strings.Contains(signed, secret) {
			t.Errorf("HTTP ID %q holds %q", signed, secret)
		}
	}
	ids := map[string]string{
		"plain":       httpID("https://host/dir/w.bin"),
		"other query": httpID("https://host/dir/w.bin?X-Sig=other"),
		"signed":      signed,
		"http":        httpID("http://host/dir/w.bin"),
		"other host":  httpID("https://host2/dir/w.bin"),
		"other path":  httpID("https://host/dir2/w.bin"),
	}
	seen := map[string]string{}
	for what, id := range ids {
		if prev, ok := seen[id]; ok {
			t.Errorf("HTTP sources %q and %q share the ID %q", what, prev, id)
		}
		seen[id] = what
	}
	if got := httpID("https://other@host/dir/w.bin"); got != ids["plain"] {
		t.Errorf("userinfo changed the ID: %q, want %q", got, ids["plain"])
	}

	s3ID := func(opts S3Options) string {
		t.Helper()
		t.Setenv("AWS_ACCESS_KEY_ID", "AKIDSECRET")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
		t.Setenv("AWS_CONFIG_FILE", "/dev/null")
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
		s, err := NewS3(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		id := s.ID()
		for _, secret := range []string{"AKIDSECRET", "s3-secret", "ep-secret"} {
			if strings.Contains(id, secret) {
				t.Errorf("S3 ID %q holds %q", id, secret)
			}
		}
		return id
	}
	aws1 := s3ID(S3Options{Bucket: "b", Prefix: "m/", Region: "us-east-1"})
	if aws2 := s3ID(S3Options{Bucket: "b", Prefix: "m/", Region: "eu-west-1"}); aws1 != aws2 {
		t.Errorf("the region changed an AWS bucket's ID: %q and %q", aws1, aws2)
	}
	others := []string{
		s3ID(S3Options{Bucket: "b", Prefix: "m/", Endpoint: "http://u:ep-secret@127.0.0.1:9000"}),
		s3ID(S3Options{Bucket: "b", Prefix: "m/", Endpoint: "http://127.0.0.2:9000"}),
		s3ID(S3Options{Bucket: "b2", Prefix: "m/"}),
		s3ID(S3Options{Bucket: "b", Prefix: "n/"}),
	}
	seen = map[string]string{aws1: "aws"}
	for _, id := range others {
		if _, ok := seen[id]; ok {
			t.Errorf("two S3 sources share the ID %q", id)
		}
		seen[id] = id
	}
	if ids["plain"] == a.ID() || strings.HasPrefix(aws1, "http") {
		t.Errorf("schemes share IDs: %q %q %q", ids["plain"], a.ID(), aws1)
	}
}
