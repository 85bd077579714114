package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/fetch"
)

// Dest is where packs are written: a local directory, or a prefix of an
// S3 bucket, an Azure container or a Cloud Storage bucket.
type Dest interface {
	// Keys lists what the destination holds already.
	Keys(ctx context.Context) (map[string]bool, error)
	// Create starts writing key; size is the original's, for sizing.
	Create(ctx context.Context, key string, size int64) (Writer, error)
	Remove(ctx context.Context, key string) error
	String() string
}

// Writer is one object being written: nothing is visible at its key
// until Commit, and Abort leaves nothing behind.
type Writer interface {
	io.Writer
	Commit() error
	Abort()
}

// keyLister lists what a destination holds: a source over its prefix.
type keyLister interface {
	List(ctx context.Context) ([]fetch.Object, error)
}

// listKeys lists a remote destination; an empty or missing prefix holds
// nothing.
func listKeys(ctx context.Context, d fmt.Stringer, src keyLister) (map[string]bool, error) {
	objs, err := src.List(ctx)
	if errors.Is(err, fetch.ErrNotFound) {
		// An empty prefix; or no bucket, which the first upload reports.
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pack: listing %s: %w", d, err)
	}
	keys := map[string]bool{}
	for _, o := range objs {
		keys[o.Key] = true
	}
	return keys, nil
}

// OpenDest opens dest, a local directory, s3://bucket/prefix,
// az://account/container/prefix or gs://bucket/prefix, for writing the
// packs of srcDir (which dest must not be inside).
func OpenDest(ctx context.Context, dest, srcDir string, cfg Config) (Dest, error) {
	if !strings.Contains(dest, "://") {
		if err := cfg.checkApplies(fetch.Location{Scheme: "file", Path: dest}); err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		return NewLocalDest(dest, srcDir)
	}
	loc, err := fetch.ParseLocation(dest)
	if err != nil {
		return nil, err
	}
	if err := cfg.checkApplies(loc); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	switch loc.Scheme {
	case "file":
		return NewLocalDest(loc.Path, srcDir)
	case "s3":
	case "az":
		return openAzureDest(ctx, loc, cfg)
	case "gs":
		return openGCSDest(ctx, loc, cfg)
	default:
		return nil, fmt.Errorf("pack: DEST %q: want a local directory, s3://bucket/prefix, az://account/container/prefix or gs://bucket/prefix", dest)
	}
	// The SDK's own retries: uploads have no range to resume, and a PUT is
	// retried whole.
	s3opts := cfg.S3
	s3opts.SDKRetries = true
	s3opts.SDKMaxAttempts = cfg.Retry.MaxAttempts
	if s3opts.Logger == nil {
		s3opts.Logger = cfg.log()
	}
	client, err := fetch.NewS3Client(ctx, s3opts)
	if err != nil {
		return nil, err
	}
	src, err := cfg.open(ctx, loc)
	if err != nil {
		return nil, err
	}
	return NewS3Dest(client, loc.Bucket, loc.Prefix, src, min(cfg.Concurrency, 8)), nil
}

// LocalDest writes into a directory.
type LocalDest struct{ dir string }

// NewLocalDest creates dir if need be; it refuses a dir inside srcDir.
func NewLocalDest(dir, srcDir string) (*LocalDest, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	src, err := filepath.Abs(srcDir)
	if err != nil {
		return nil, err
	}
	if rel, err := filepath.Rel(src, abs); err == nil && filepath.IsLocal(rel) || abs == src {
		return nil, fmt.Errorf("pack: DEST %s is inside SRC_DIR %s", dir, srcDir)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return &LocalDest{dir: abs}, nil
}

func (d *LocalDest) String() string { return d.dir }

// Keys lists the directory as the mount's local source does.
func (d *LocalDest) Keys(ctx context.Context) (map[string]bool, error) {
	l, err := fetch.NewLocal(fetch.LocalOptions{Root: d.dir})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	objs, err := l.List(ctx)
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for _, o := range objs {
		keys[o.Key] = true
	}
	return keys, nil
}

// Create writes a temporary file beside key's, renamed into place on Commit.
func (d *LocalDest) Create(ctx context.Context, key string, size int64) (Writer, error) {
	path := filepath.Join(d.dir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".pack-*")
	if err != nil {
		return nil, err
	}
	return &localWriter{f: f, path: path}, nil
}

// Remove removes key; a key that is not there is no error.
func (d *LocalDest) Remove(ctx context.Context, key string) error {
	err := os.Remove(filepath.Join(d.dir, filepath.FromSlash(key)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// localWriter writes a temporary file and renames it into place.
type localWriter struct {
	f    *os.File
	path string
}

func (w *localWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

func (w *localWriter) Commit() error {
	// CreateTemp's 0600 is for the file being written; the result is as
	// readable as any file written the usual way.
	err := w.f.Chmod(0o644)
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.f.Name(), w.path)
	}
	if err != nil {
		os.Remove(w.f.Name())
	}
	return err
}

func (w *localWriter) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// S3Dest writes under an S3 prefix.
type S3Dest struct {
	client   *s3.Client
	bucket   string
	prefix   string       // ends in "/" unless empty
	src      fetch.Source // the same prefix, for listing
	inflight int          // parts uploaded at once
}

// NewS3Dest writes under prefix of bucket with client, listing what is
// there with src (a source over the same prefix), with up to inflight
// parts of an object uploaded at once.
func NewS3Dest(client *s3.Client, bucket, prefix string, src fetch.Source, inflight int) *S3Dest {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/" // as a mount of the prefix takes it
	}
	return &S3Dest{client: client, bucket: bucket, prefix: prefix, src: src, inflight: max(inflight, 1)}
}

func (d *S3Dest) String() string { return "s3://" + d.bucket + "/" + d.prefix }

// Keys lists the prefix; an empty or missing one holds nothing.
func (d *S3Dest) Keys(ctx context.Context) (map[string]bool, error) {
	return listKeys(ctx, d, d.src)
}

// Remove deletes key.
func (d *S3Dest) Remove(ctx context.Context, key string) error {
	_, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(d.prefix + key)})
	return err
}

// Create starts an upload of key, in parts sized for an object about as
// big as the original.
func (d *S3Dest) Create(ctx context.Context, key string, size int64) (Writer, error) {
	w := &s3Writer{ctx: ctx, client: d.client, bucket: d.bucket, key: d.prefix + key}
	w.p.init(partSize(size), d.inflight)
	return w, nil
}

// openAzureDest opens az://account/container/prefix with the credentials
// a mount of it would use (AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN,
// DefaultAzureCredential) and cfg.S3's endpoint.
func openAzureDest(ctx context.Context, loc fetch.Location, cfg Config) (Dest, error) {
	if cfg.S3.NoSignRequest {
		return nil, errors.New("pack: --no-sign-request: writing to Azure needs credentials")
	}
	client, err := fetch.NewAzureClient(fetch.AzureOptions{
		Account: loc.Account, Container: loc.Bucket, Endpoint: cfg.S3.Endpoint, Retry: cfg.Retry,
	})
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	src, err := cfg.open(ctx, loc)
	if err != nil {
		return nil, err
	}
	return NewAzureDest(client, loc.Account, loc.Bucket, loc.Prefix, src, min(cfg.Concurrency, 8)), nil
}
