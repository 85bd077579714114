package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Options configures an S3 (or S3-compatible) source.
type S3Options struct {
	Bucket string
	// Prefix is the key prefix the mount shows as its root ("" = whole bucket).
	Prefix string
	// Region; empty means the SDK's default chain, then us-east-1.
	Region string
	// Endpoint for S3-compatible stores (path-style addressing is used).
	Endpoint string
	// Profile selects a shared-config profile (empty: AWS_PROFILE or default).
	Profile string
	// NoSignRequest sends anonymous requests, for public buckets.
	NoSignRequest bool
	// MaxConns bounds connections to the store (0 = 64).
	MaxConns int
	// Logger receives the SDK's own log lines (nil: slog.Default()).
	Logger *slog.Logger
	// Net bounds where requests to the store connect; nil allows all.
	Net   *NetPolicy
	Retry RetryOptions
}

// S3 is a Source over one bucket and prefix.
type S3 struct {
	client *s3.Client
	bucket string
	prefix string // as the user gave it
	// root is what keys are relative to: the prefix as a directory, or the
	// parent of a prefix that turned out to name a single object. List
	// settles it; it is not changed afterwards.
	root  string
	retry RetryOptions
}

// NewS3 builds a client from the SDK's default credential chain (env,
// shared config, web identity / IRSA, container and instance roles).
// Retries are ours, not the SDK's, so that short bodies and stalls are
// retried by the same budget as 5xx responses.
func NewS3(ctx context.Context, opts S3Options) (*S3, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3: bucket name is empty")
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = 64
	}
	client, err := NewS3Client(ctx, S3ClientOptions{
		Region: opts.Region, Endpoint: opts.Endpoint, Profile: opts.Profile, NoSignRequest: opts.NoSignRequest,
		Logger: opts.Logger, MaxConns: maxConns, Net: opts.Net,
	})
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimPrefix(opts.Prefix, "/")
	root := prefix
	if root != "" && !strings.HasSuffix(root, "/") {
		root += "/"
	}
	return &S3{client: client, bucket: opts.Bucket, prefix: prefix, root: root, retry: opts.Retry}, nil
}

func (s *S3) String() string {
	if s.prefix == "" {
		return "s3://" + s.bucket
	}
	return "s3://" + s.bucket + "/" + s.prefix
}

// ID is the endpoint (without userinfo or query; "aws" for AWS itself,
// where bucket names are global, so the region does not matter), the
// bucket and the prefix as given: settled before List, never changed.
func (s *S3) ID() string {
	host := "aws"
	if ep := s.client.Options().BaseEndpoint; ep != nil && *ep != "" {
		if u, err := url.Parse(*ep); err == nil && u.Host != "" {
			u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
			host = strings.TrimSuffix(u.String(), "/")
		} else {
			// Unparsable: it may hold anything, so only its hash.
			sum := sha256.Sum256([]byte(*ep))
			host = "endpoint-sha256:" + hex.EncodeToString(sum[:])
		}
	}
	return "s3+" + host + "/" + s.bucket + "/" + s.prefix
}

// List lists every object under the prefix. A prefix that names a single
// object (s3://bucket/model.gguf) yields that object alone.
func (s *S3) List(ctx context.Context) ([]Object, error) {
	return listUnder(ctx, s, &s.root, s.prefix, "objects", s.listPrefix, s.head)
}

func (s *S3) listPrefix(ctx context.Context, dir string) ([]Object, error) {
	var objs []Object
	var token *string
	for {
		var out *s3.ListObjectsV2Output
		err := s.retry.do(ctx, OpList, 0, "list "+s.String(), func(ctx context.Context) error {
			var err error
			out, err = s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
				Bucket:            aws.String(s.bucket),
				Prefix:            aws.String(dir),
				ContinuationToken: token,
			})
			return s.mapError(err)
		})
		if err != nil {
			return nil, err
		}
		for _, o := range out.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), dir)
			if key == "" || strings.HasSuffix(key, "/") {
				continue // directory markers
			}
			// No <Size> is an unknown size, which Usable refuses, not 0.
			size := int64(-1)
			if o.Size != nil {
				size = *o.Size
			}
			obj := Object{
				Key:     key,
				Size:    size,
				ModTime: aws.ToTime(o.LastModified),
				ETag:    aws.ToString(o.ETag),
			}
			// The algorithm of a full-object checksum, so that a reader
			// can sum blocks as they come; Stat gives its value.
			if len(o.ChecksumAlgorithm) == 1 {
				obj.Checksum.Algorithm = string(o.ChecksumAlgorithm[0])
				obj.Checksum.Composite = o.ChecksumType == types.ChecksumTypeComposite
			}
			objs = append(objs, obj)
		}
		if len(objs) > MaxListedObjects {
			return nil, fmt.Errorf("%s: more than %d objects under this prefix; mount one model's prefix", s, MaxListedObjects)
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return objs, nil
		}
		token = out.NextContinuationToken
	}
}

// WarmConns opens up to n connections to the store at once and leaves
// them idle in the client's pool, so that the first wave of a mount's
// reads (a loader's header, the planner's headers, the first blocks) does
// not each pay a TCP and TLS handshake, one or two round trips, while it
// waits. Each connection carries one HeadBucket, whose answer is ignored:
// a refusal (a key allowed only a prefix) leaves a warm connection too. It
// returns when every request has ended.
func (s *S3) WarmConns(ctx context.Context, n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, _ = s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
		})
	}
	wg.Wait()
}

// Stat returns the current version of key (relative to the prefix).
func (s *S3) Stat(ctx context.Context, key string) (Object, error) {
	obj, err := s.head(ctx, s.fullKey(key))
	obj.Key = key
	return obj, err
}

func (s *S3) head(ctx context.Context, full string) (Object, error) {
	var out *s3.HeadObjectOutput
	err := s.retry.do(ctx, OpStat, 0, "stat "+full, func(ctx context.Context) error {
		var err error
		out, err = s.client.HeadObject(ctx, &s3.HeadObjectInput{
			Bucket: aws.String(s.bucket), Key: aws.String(full), ChecksumMode: types.ChecksumModeEnabled,
		})
		return s.mapError(err)
	})
	if err != nil {
		return Object{}, err
	}
	// No Content-Length is an unknown size, which Usable refuses, not 0.
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return Object{
		Key:       full,
		Size:      size,
		ModTime:   aws.ToTime(out.LastModified),
		ETag:      aws.ToString(out.ETag),
		VersionID: aws.ToString(out.VersionId),
		Checksum:  fullObjectChecksum(out),
		// SSE-KMS and SSE-C ETags are not the content's MD5.
		OpaqueETag: out.ServerSideEncryption == types.ServerSideEncryptionAwsKms ||
			out.ServerSideEncryption == types.ServerSideEncryptionAwsKmsDsse || out.SSECustomerAlgorithm != nil,
	}, nil
}

// fullObjectChecksum picks the checksum S3 keeps for the object: a
// full-object one, or the composite one of a multipart upload ("...-N",
// computed over the parts' checksums), marked so.
func fullObjectChecksum(out *s3.HeadObjectOutput) Checksum {
	if out.ChecksumType == types.ChecksumTypeComposite {
		for _, c := range []Checksum{
			{Algorithm: "SHA256", Value: aws.ToString(out.ChecksumSHA256)}, {Algorithm: "SHA1", Value: aws.ToString(out.ChecksumSHA1)},
			{Algorithm: "CRC32C", Value: aws.ToString(out.ChecksumCRC32C)}, {Algorithm: "CRC32", Value: aws.ToString(out.ChecksumCRC32)},
		} {
			if c.Value != "" {
				c.Composite = true
				return c
			}
		}
		return Checksum{}
	}
	if out.ChecksumType != "" && out.ChecksumType != types.ChecksumTypeFullObject {
		return Checksum{}
	}
	for _, c := range []Checksum{
		{Algorithm: "SHA256", Value: aws.ToString(out.ChecksumSHA256)}, {Algorithm: "SHA1", Value: aws.ToString(out.ChecksumSHA1)},
		{Algorithm: "CRC32C", Value: aws.ToString(out.ChecksumCRC32C)}, {Algorithm: "CRC32", Value: aws.ToString(out.ChecksumCRC32)},
		{Algorithm: "CRC64NVME", Value: aws.ToString(out.ChecksumCRC64NVME)},
	} {
		if c.Value != "" && !strings.Contains(c.Value, "-") {
			return c
		}
	}
	return Checksum{}
}

func (s *S3) fullKey(key string) string { return s.root + key }

// maxParts is the most parts S3 lets an upload have.
const maxParts = 10000

// PartSizes returns the sizes of the parts a multipart object was uploaded
// in, in order (none for a single-part object), from GetObjectAttributes,
// pinned to obj's version.
func (s *S3) PartSizes(ctx context.Context, obj Object) ([]int64, error) {
	full := s.fullKey(obj.Key)
	var sizes []int64
	var marker *string
	for {
		var out *s3.GetObjectAttributesOutput
		err := s.retry.do(ctx, OpStat, 0, "attributes "+full, func(ctx context.Context) error {
			in := &s3.GetObjectAttributesInput{
				Bucket: aws.String(s.bucket), Key: aws.String(full), MaxParts: aws.Int32(1000), PartNumberMarker: marker,
				ObjectAttributes: []types.ObjectAttributes{types.ObjectAttributesEtag, types.ObjectAttributesObjectParts},
			}
			if obj.VersionID != "" {
				in.VersionId = aws.String(obj.VersionID)
			}
			var err error
			out, err = s.client.GetObjectAttributes(ctx, in)
			return s.mapError(err)
		})
		if err != nil {
			return nil, err
		}
		// GetObjectAttributes gives the ETag without its quotes.
		if etag := aws.ToString(out.ETag); obj.ETag != "" && etag != "" && `"`+strings.Trim(etag, `"`)+`"` != obj.ETag {
			return nil, fmt.Errorf("attributes %s: %w: ETag %s, pinned %s", full, ErrChanged, etag, obj.ETag)
		}
		op := out.ObjectParts
		if op == nil {
			return sizes, nil
		}
		for _, p := range op.Parts {
			sizes = append(sizes, aws.ToInt64(p.Size))
		}
		if len(sizes) > maxParts {
			return nil, fmt.Errorf("attributes %s: more than %d parts", full, maxParts)
		}
		if !aws.ToBool(op.IsTruncated) || op.NextPartNumberMarker == nil || len(op.Parts) == 0 {
			return sizes, nil
		}
		marker = op.NextPartNumberMarker
	}
}

// ReadAt is one ranged GET, If-Match pinned, retried within the budget.
func (s *S3) ReadAt(ctx context.Context, obj Object, p []byte, off int64) (int, error) {
	n, atEnd, err := clipRead(obj, len(p), off)
	if err != nil {
		return 0, err
	}
	p = p[:n]
	if err := checkPinned(obj); err != nil {
		return 0, fmt.Errorf("read %s: %w", obj.Key, err)
	}
	full := s.fullKey(obj.Key)
	end := off + int64(n)
	what := fmt.Sprintf("read %s [%d, %d)", full, off, end)
	return readRetried(ctx, s.retry, what, n, atEnd, func(ctx context.Context) error {
		in := &s3.GetObjectInput{
			Bucket: aws.String(s.bucket),
			Key:    aws.String(full),
			Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, end-1)),
		}
		// Stores that list no ETag are pinned by date, as HTTP files are.
		byDate := obj.ETag == "" && obj.VersionID == ""
		if obj.ETag != "" {
			in.IfMatch = aws.String(obj.ETag)
		}
		if obj.VersionID != "" {
			in.VersionId = aws.String(obj.VersionID)
		}
		if byDate {
			in.IfUnmodifiedSince = aws.Time(obj.ModTime)
		}
		out, err := s.client.GetObject(ctx, in)
		if err != nil {
			return s.mapError(err)
		}
		defer out.Body.Close()
		if etag := aws.ToString(out.ETag); obj.ETag != "" && etag != "" && etag != obj.ETag {
			return fmt.Errorf("%w: ETag %s, pinned %s", ErrChanged, etag, obj.ETag)
		}
		switch {
		case !byDate:
		case out.LastModified == nil:
			return fmt.Errorf("%w: the reply has no Last-Modified to compare with the pinned one", ErrUnpinned)
		case !out.LastModified.Equal(obj.ModTime):
			return fmt.Errorf("%w: modified %s, pinned %s", ErrChanged, out.LastModified.Format(time.RFC3339), obj.ModTime.Format(time.RFC3339))
		}
		if err := checkContentRange(aws.ToString(out.ContentRange), off, end, obj.Size); err != nil {
			return err
		}
		if out.ContentLength != nil && *out.ContentLength != int64(n) {
			// The headers disagree on what the body is; trust neither.
			return transient(fmt.Errorf("Content-Length %d for the %d bytes asked for", *out.ContentLength, n), 0)
		}
		if _, err := io.ReadFull(out.Body, p); err != nil {
			return fmt.Errorf("reading body: %w", shortBody(err))
		}
		return nil
	})
}

// checkContentRange verifies the response covers exactly [off, end) of an
// object of the pinned size, so a misbehaving server or proxy can never
// hand us the wrong bytes.
func checkContentRange(cr string, off, end, size int64) error {
	start, last, total, err := parseHTTPContentRange(cr)
	if err != nil {
		return transient(err, 0)
	}
	if total >= 0 && total != size {
		return fmt.Errorf("%w: size %d, pinned %d", ErrChanged, total, size)
	}
	if start != off || last != end-1 {
		return transient(fmt.Errorf("Content-Range %q, asked for %d-%d", cr, off, end-1), 0)
	}
	return nil
}

// mapError turns SDK errors into the package's sentinels and marks the
// transient ones. The SDK's messages carry no credentials.
func (s *S3) mapError(err error) error {
	if err == nil {
		return nil
	}
	// Without credentials no request was sent: the SDK's operation
	// context adds nothing.
	var credErr *credentialsError
	if errors.As(err, &credErr) {
		return credErr
	}
	var apiErr smithy.APIError
	code := ""
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("%w: bucket %q does not exist", ErrNotFound, s.bucket)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "AccessDenied" ||
		code == "ExpiredToken" || code == "InvalidToken" || status == http.StatusForbidden || status == http.StatusUnauthorized:
		return fmt.Errorf("%w: %s: check credentials and bucket policy: %w", ErrAccess, s, err)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed || status == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: %w", ErrChanged, err)
	case code == "SlowDown" || code == "RequestTimeout" || code == "InternalError" || code == "ServiceUnavailable" ||
		status == http.StatusTooManyRequests || status >= 500:
		return transient(err, retryAfter(respErr))
	}
	return err
}

func retryAfter(respErr *smithyhttp.ResponseError) time.Duration {
	if respErr == nil || respErr.Response == nil {
		return 0
	}
	secs, err := strconv.Atoi(respErr.Response.Header.Get("Retry-After"))
	if err != nil || secs <= 0 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// credentialsProbe marks a failure to get credentials, so that it is
// reported as such rather than as the SDK's "get identity" chain.
type credentialsProbe struct {
	inner            aws.CredentialsProvider
	instanceRoleOnly bool
}

func (p credentialsProbe) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := p.inner.Retrieve(ctx)
	if err != nil {
		return creds, &credentialsError{err: err, instanceRoleOnly: p.instanceRoleOnly}
	}
	return creds, nil
}

// credentialsError is a failure to get credentials; no request reached the
// store. It counts as ErrAccess unless a credentials endpoint (instance
// metadata, STS) could not be reached, which is retried like any network
// error. Either way it is never an outage that a saved listing may stand
// in for: the mount has not shown that it may read the source (Unreachable).
type credentialsError struct {
	err              error
	instanceRoleOnly bool
}

func (e *credentialsError) Error() string {
	if e.instanceRoleOnly {
		return "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, " +
			"name a profile (AWS_PROFILE or --aws-profile), configure web identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE) " +
			"or run with an instance role; for a public bucket use --no-sign-request (instance role: " + e.err.Error() + ")"
	}
	return "getting AWS credentials: " + e.err.Error()
}

func (e *credentialsError) Unwrap() error { return e.err }

func (e *credentialsError) Is(target error) bool {
	var netErr net.Error
	return target == ErrAccess && !errors.As(e.err, &netErr)
}

// SDKLogger sends the AWS SDK's log lines (such as its IMDSv1 fallback
// warning) through log, so they follow the product's level and format.
func SDKLogger(log *slog.Logger) logging.Logger { return sdkLogger{log} }

type sdkLogger struct{ log *slog.Logger }

func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelDebug
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...), "from", "aws-sdk")
}
