package s3server_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/modelfs/modelfs/tests/s3server"
)

const testRole = "arn:aws:iam::123456789012:role/model-reader"

// webIdentityClient is an S3 client whose credentials come the way a pod's
// do with a projected service account token: the SDK's default chain
// reads AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE and calls STS at
// AWS_ENDPOINT_URL_STS.
func webIdentityClient(t *testing.T, srv string, role, token string) *s3.Client {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ROLE_ARN", role)
	t.Setenv("AWS_ROLE_SESSION_NAME", "modelfs-test")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", file)
	t.Setenv("AWS_ENDPOINT_URL_STS", srv)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region))
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv)
		o.UsePathStyle = true
	})
}

// TestAssumeRoleWithWebIdentity: a trusted token buys credentials that
// read objects; an unknown token and a role the token is not trusted for
// are refused with STS's codes; and the temporary key is worthless
// without its session token.
func TestAssumeRoleWithWebIdentity(t *testing.T) {
	srv := newServer(t, s3server.Options{})
	if err := srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.PutObject(bucket, "model.bin", []byte("weights")); err != nil {
		t.Fatal(err)
	}
	srv.TrustWebIdentity(testRole, "pod-token-1")
	ctx := context.Background()

	c := webIdentityClient(t, srv.URL(), testRole, "pod-token-1")
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("model.bin")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(b) != "weights" {
		t.Fatalf("read %q", b)
	}
	if n := srv.AssumedRoles(); n != 1 {
		t.Fatalf("%d roles assumed, want 1", n)
	}
	creds, err := c.Options().Credentials.Retrieve(ctx)
	if err != nil || !strings.HasPrefix(creds.AccessKeyID, "ASIA") || creds.SessionToken == "" || !creds.CanExpire {
		t.Fatalf("credentials %+v, %v: want temporary ones", creds.AccessKeyID, err)
	}

	for _, tc := range []struct{ role, token, code string }{
		{testRole, "forged-token", "InvalidIdentityToken"},
		{"arn:aws:iam::123456789012:role/other", "pod-token-1", "AccessDenied"},
	} {
		c := webIdentityClient(t, srv.URL(), tc.role, tc.token)
		_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("model.bin")})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != tc.code {
			t.Errorf("role %s token %s: %v, want %s", tc.role, tc.token, err, tc.code)
		}
	}

	// The temporary key without its session token.
	stolen := s3.New(s3.Options{Region: region, BaseEndpoint: aws.String(srv.URL()), UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey, SessionToken: "guessed"}, nil
		})})
	_, err = stolen.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("model.bin")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidToken" {
		t.Errorf("a temporary key with the wrong session token: %v, want InvalidToken", err)
	}
}
