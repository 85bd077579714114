package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
)

// Location is a parsed source URI.
type Location struct {
	// Scheme is "s3", "gs", "http", "https", "file", "hf" or "az".
	Scheme string
	// Bucket and Prefix, for s3 and gs; for az, Bucket is the container.
	Bucket, Prefix string
	// Account is the storage account, for az.
	Account string
	// URL, for http(s); Path, for file.
	URL, Path string
	// Repo and Revision ("" for main), for hf; Dataset for hf://datasets/.
	Repo, Revision string
	Dataset        bool
}

// ParseLocation parses s3://bucket[/prefix], gs://bucket[/prefix],
// http(s)://host/path, file:///abs/dir, hf://[datasets/]org/name[@revision] and
// az://account/container[/prefix] (also as
// https://account.blob.core.windows.net/container[/prefix]). It rejects what it cannot serve with a message that
// names the problem.
func ParseLocation(raw string) (Location, error) {
	if raw == "" {
		return Location{}, fmt.Errorf("source is empty")
	}
	if strings.ContainsAny(raw, "\x00\r\n") {
		return Location{}, fmt.Errorf("source %q contains control characters", raw)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Location{}, fmt.Errorf("source %q is not a URI: want s3://bucket/prefix, https://host/path or file:///dir", raw)
	}
	switch strings.ToLower(scheme) {
	case "s3":
		bucket, prefix, _ := strings.Cut(rest, "/")
		if err := checkBucket(bucket); err != nil {
			return Location{}, fmt.Errorf("source %q: %w", raw, err)
		}
		for _, seg := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
			if seg == ".." || seg == "." {
				return Location{}, fmt.Errorf("source %q: prefix contains a %q segment", raw, seg)
			}
		}
		return Location{Scheme: "s3", Bucket: bucket, Prefix: prefix}, nil
	case "gs":
		loc, err := parseGCSLocation(rest)
		if err != nil {
			return Location{}, fmt.Errorf("source %q: %w", raw, err)
		}
		return loc, nil
	case "http", "https":
		u, err := url.Parse(raw)
		if err != nil {
			return Location{}, fmt.Errorf("source is a malformed URL: %w", urlCause(err))
		}
		if u.Host == "" {
			return Location{}, fmt.Errorf("source %q has no host", redactURL(u))
		}
		if loc, ok, err := azureURLLocation(u); ok {
			if err != nil {
				return Location{}, fmt.Errorf("source %q: %w", redactURL(u), err)
			}
			return loc, nil
		}
		return Location{Scheme: strings.ToLower(scheme), URL: raw}, nil
	case "file":
		u, err := url.Parse(raw)
		if err != nil {
			return Location{}, fmt.Errorf("source is a malformed file URI: %w", urlCause(err))
		}
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("source %q: file URIs must be local (file:///path)", raw)
		}
		if u.Path == "" || !filepath.IsAbs(u.Path) {
			return Location{}, fmt.Errorf("source %q: file URIs need an absolute path (file:///path)", raw)
		}
		return Location{Scheme: "file", Path: filepath.Clean(u.Path)}, nil
	case "hf":
		loc, err := parseHFLocation(rest)
		if err != nil {
			return Location{}, fmt.Errorf("source %q: %w", raw, err)
		}
		return loc, nil
	case "az":
		if strings.ContainsAny(rest, "?#") {
			// Not quoted: what follows '?' may be a SAS.
			return Location{}, errors.New("source: az:// URIs take no query or fragment: put a SAS in AZURE_STORAGE_SAS_TOKEN")
		}
		loc, err := parseAzureLocation(rest)
		if err != nil {
			return Location{}, fmt.Errorf("source %q: %w", raw, err)
		}
		return loc, nil
	default:
		return Location{}, fmt.Errorf("source %q: unknown scheme %q: want s3, gs, http, https, file, hf or az", raw, scheme)
	}
}

// urlCause drops the URL that url.Parse quotes in its errors: it may hold
// a password or a signed query.
func urlCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// checkBucket applies S3's bucket naming rules, loosened for S3-compatible
// stores that also allow underscores and upper case.
func checkBucket(b string) error {
	if b == "" {
		return fmt.Errorf("bucket name is empty")
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters", b)
	}
	for _, r := range b {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
		if !ok {
			return fmt.Errorf("bucket name %q contains %q", b, r)
		}
	}
	return nil
}

// redactURL drops userinfo and query, where credentials and signatures hide.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

// OpenOptions carries what each kind of source may need.
type OpenOptions struct {
	S3    S3Options // Bucket and Prefix are taken from the location
	HTTP  HTTPOptions
	HF    HFOptions // Repo, Dataset and Revision are taken from the location
	Retry RetryOptions
	// Net bounds where every network source connects; nil allows all.
	Net *NetPolicy
	// Logger gets the local source's warnings about entries it leaves out.
	Logger *slog.Logger
	// Azure's Account, Container and Prefix are taken from the location;
	// see Open for its Endpoint.
	Azure AzureOptions
	// GCS: Bucket and Prefix are taken from the location. Its Endpoint,
	// MaxConns and Logger, left zero, are S3's, and S3's NoSignRequest
	// counts too: callers fill S3's from their endpoint and
	// anonymous-access settings whatever the scheme.
	GCS GCSOptions
}

// Open returns the Source for a location.
func Open(ctx context.Context, loc Location, opts OpenOptions) (Source, error) {
	switch loc.Scheme {
	case "s3":
		o := opts.S3
		o.Bucket, o.Prefix, o.Retry, o.Net = loc.Bucket, loc.Prefix, opts.Retry, opts.Net
		return NewS3(ctx, o)
	case "http", "https":
		o := opts.HTTP
		o.URL, o.Retry, o.Net = loc.URL, opts.Retry, opts.Net
		return NewHTTP(o)
	case "file":
		return NewLocal(LocalOptions{Root: loc.Path, Logger: opts.Logger})
	case "hf":
		o := opts.HF
		o.Repo, o.Dataset, o.Revision, o.Retry, o.Net = loc.Repo, loc.Dataset, loc.Revision, opts.Retry, opts.Net
		return NewHF(o)
	case "az":
		o := opts.Azure
		o.Account, o.Container, o.Prefix, o.Retry, o.Net = loc.Account, loc.Bucket, loc.Prefix, opts.Retry, opts.Net
		// The command line's --endpoint and --no-sign-request fill S3's
		// options; for az:// they name the blob service and anonymous
		// access.
		if o.Endpoint == "" {
			o.Endpoint = opts.S3.Endpoint
		}
		o.Anonymous = o.Anonymous || opts.S3.NoSignRequest
		return NewAzure(o)
	case "gs":
		o := opts.GCS
		if o.Endpoint == "" {
			o.Endpoint = opts.S3.Endpoint
		}
		o.NoSignRequest = o.NoSignRequest || opts.S3.NoSignRequest
		if o.MaxConns == 0 {
			o.MaxConns = opts.S3.MaxConns
		}
		if o.Logger == nil {
			o.Logger = opts.S3.Logger
		}
		o.Bucket, o.Prefix, o.Retry, o.Net = loc.Bucket, loc.Prefix, opts.Retry, opts.Net
		return NewGCS(ctx, o)
	}
	return nil, fmt.Errorf("unknown scheme %q", loc.Scheme)
}
