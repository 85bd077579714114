package fetch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/tests/s3server"
)

// onlyEnvKeys leaves the SDK's default chain the given keys in the
// environment and nothing else: no config or credentials file, profile,
// region or instance metadata of the machine running the test.
func onlyEnvKeys(t *testing.T, key, secret string) {
	t.Setenv("AWS_ACCESS_KEY_ID", key)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// NewS3Client reaches an S3-compatible endpoint path-style, signs with the
// default chain's credentials or not at all, and retries only when told.
func TestNewS3Client(t *testing.T) {
	const key, secret = "AKIDCLIENTTEST", "client-test-secret"
	srv := s3server.StartTest(t, s3server.Options{AccessKey: key, SecretKey: secret}, "bucket")
	if _, err := srv.PutObject("bucket", "k", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	onlyEnvKeys(t, key, secret)
	ctx := context.Background()
	get := func(c *s3.Client) ([]byte, error) {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bucket"), Key: aws.String("k")})
		if err != nil {
			return nil, err
		}
		defer out.Body.Close()
		return io.ReadAll(out.Body)
	}

	c, err := NewS3Client(ctx, S3ClientOptions{Endpoint: srv.URL(), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Options().Region; r != "us-east-1" {
		t.Errorf("region %q, want us-east-1 when none is configured", r)
	}
	if !c.Options().UsePathStyle {
		t.Error("an endpoint is not addressed path-style")
	}
	if b, err := get(c); err != nil || !bytes.Equal(b, []byte("hello")) {
		t.Fatalf("GetObject: %q, %v", b, err)
	}

	anon, err := NewS3Client(ctx, S3ClientOptions{Endpoint: srv.URL(), NoSignRequest: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(anon); err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Errorf("an anonymous GetObject on a private server: %v, want AccessDenied", err)
	}

	// Every request fails once with a 500 before it is served.
	var failed atomic.Int64
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if failed.Add(1)%2 == 1 {
			srv.ServeFault(w, r, s3server.Fault{Kind: s3server.FaultInternalError})
			return true
		}
		return false
	})
	if _, err := get(c); err == nil {
		t.Error("a client without SDK retries retried a 500")
	}
	failed.Store(0)
	retrying, err := NewS3Client(ctx, S3ClientOptions{Endpoint: srv.URL(), SDKRetries: true, SDKMaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := get(retrying); err != nil || !bytes.Equal(b, []byte("hello")) {
		t.Errorf("GetObject with SDK retries over one 500: %q, %v", b, err)
	}
}

// A client given a credentials file signs with that file's keys alone:
// the environment's keys, which would win in the default chain, are not
// used, and a file without the profile's keys is refused without quoting
// it.
func TestNewS3ClientCredentialsFile(t *testing.T) {
	const key, secret = "AKIDFILEONLY", "file-only-secret"
	srv := s3server.StartTest(t, s3server.Options{AccessKey: key, SecretKey: secret}, "bucket")
	if _, err := srv.PutObject("bucket", "k", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDOFTHENODE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "node-secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	file := filepath.Join(t.TempDir(), "credentials")
	body := "[default]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = wrong\n\n[cache]\naws_access_key_id = " + key + "\naws_secret_access_key = " + secret + "\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := NewS3Client(ctx, S3ClientOptions{Endpoint: srv.URL(), Profile: "cache", CredentialsFile: file})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bucket"), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("GetObject with the file's keys: %v", err)
	}
	out.Body.Close()

	// The file's default profile holds other keys: the server refuses them.
	c, err = NewS3Client(ctx, S3ClientOptions{Endpoint: srv.URL(), CredentialsFile: file})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bucket"), Key: aws.String("k")}); err == nil {
		t.Error("GetObject with the default profile's wrong keys succeeded")
	}

	_, err = NewS3Client(ctx, S3ClientOptions{Endpoint: srv.URL(), Profile: "absent", CredentialsFile: file})
	if err == nil || !strings.Contains(err.Error(), `"absent"`) || strings.Contains(err.Error(), secret) {
		t.Errorf("a profile the file lacks: %v, want an error naming it and quoting nothing of the file", err)
	}
}
