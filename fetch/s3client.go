package fetch

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3ClientOptions configures an S3 client: the one place that turns
// region, endpoint, profile, anonymous access, logging and retries into
// SDK settings, for the S3 source and for writers of S3 (pack publishing).
type S3ClientOptions struct {
	// Region; empty means the SDK's default chain, then us-east-1.
	Region string
	// Endpoint for S3-compatible stores (path-style addressing is used).
	Endpoint string
	// Profile selects a shared-config profile (empty: AWS_PROFILE or default).
	Profile string
	// NoSignRequest sends anonymous requests, for public buckets.
	NoSignRequest bool
	// Logger receives the SDK's own log lines (nil: slog.Default()).
	Logger *slog.Logger
	// MaxConns bounds connections to the store; 0 leaves the SDK's
	// default transport.
	MaxConns int
	// Net bounds where requests to the store connect; nil allows all.
	Net *NetPolicy
	// SDKRetries lets the SDK retry failed requests, up to
	// SDKMaxAttempts attempts (0: the SDK's default). Without it the SDK
	// does not retry and the caller does (the S3 source retries by its
	// own budget, so that short bodies and stalls count too).
	SDKRetries     bool
	SDKMaxAttempts int
	// CredentialsFile, when set, is the one place this client's
	// credentials come from: the profile Profile (or "default") of that
	// AWS shared credentials file, read once. Neither the environment's
	// keys nor the node's roles are consulted, so a store with credentials
	// of its own never borrows another's, and a process without the
	// node's identity can still reach it.
	CredentialsFile string
}

// NewS3Client builds an S3 client from the SDK's default credential chain
// (env, shared config, web identity / IRSA, container and instance roles).
func NewS3Client(ctx context.Context, opts S3ClientOptions) (*s3.Client, error) {
	var httpClient *awshttp.BuildableClient
	if opts.MaxConns > 0 {
		httpClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConns = opts.MaxConns
			tr.MaxIdleConnsPerHost = opts.MaxConns
			tr.MaxConnsPerHost = opts.MaxConns
			// Model weights do not compress; asking for gzip only costs CPU.
			tr.DisableCompression = true
		})
	} else if opts.Net != nil {
		httpClient = awshttp.NewBuildableClient()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	loadOpts := []func(*config.LoadOptions) error{
		config.WithLogger(SDKLogger(log)),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		// No per-request checksums on uploads: a pack's frames carry an
		// xxhash64 each, and pack --verify checks the whole.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
	}
	if httpClient != nil {
		loadOpts = append(loadOpts, config.WithHTTPClient(httpClient))
	}
	if opts.SDKRetries {
		loadOpts = append(loadOpts, config.WithRetryMaxAttempts(opts.SDKMaxAttempts))
	} else {
		loadOpts = append(loadOpts, config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }))
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.Profile != "" {
		loadOpts = append(loadOpts, config.WithSharedConfigProfile(opts.Profile))
	}
	if opts.NoSignRequest {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	} else if opts.CredentialsFile != "" {
		creds, err := fileCredentials(ctx, opts.CredentialsFile, opts.Profile)
		if err != nil {
			return nil, err
		}
		// The profile, if any, is looked up in that file alone.
		loadOpts = append(loadOpts, config.WithCredentialsProvider(creds),
			config.WithSharedCredentialsFiles([]string{opts.CredentialsFile}), config.WithSharedConfigFiles([]string{}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3: loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if !opts.NoSignRequest {
		// The chain falls back to the instance role when it finds nothing
		// else; its failure then means no credentials were given at all.
		cfg.Credentials = credentialsProbe{
			inner:            cfg.Credentials,
			instanceRoleOnly: aws.IsCredentialsProvider(cfg.Credentials, (*ec2rolecreds.Provider)(nil)),
		}
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Net != nil {
			// The policy binds the store's connections, not the credential
			// providers': those reach the node's identity endpoints
			// (instance metadata, pod identity) only where the node's
			// identity is lent.
			o.HTTPClient = httpClient.WithDialerOptions(opts.Net.applyDialer).
				WithTransportOptions(func(tr *http.Transport) { tr.Proxy = nil })
		}
		o.APIOptions = append(o.APIOptions, limitBodies)
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
			o.UsePathStyle = true
		}
	}), nil
}

// fileCredentials reads the keys of profile (or "default") from the AWS
// shared credentials file at path. Its errors name the file and the
// profile, never the file's content.
func fileCredentials(ctx context.Context, path, profile string) (aws.CredentialsProvider, error) {
	if profile == "" {
		profile = "default"
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("s3: credentials file: %w", err)
	}
	sc, err := config.LoadSharedConfigProfile(ctx, profile, func(o *config.LoadSharedConfigOptions) {
		o.CredentialsFiles, o.ConfigFiles = []string{path}, []string{}
	})
	if err != nil || !sc.Credentials.HasKeys() {
		return nil, fmt.Errorf("s3: credentials file %s has no keys for profile %q", path, profile)
	}
	return credentials.StaticCredentialsProvider{Value: sc.Credentials}, nil
}
