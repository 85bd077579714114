package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/modelformat/modeldir"
)

func packCommand() *cli.Command {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return &cli.Command{
		Name:      "pack",
		Usage:     "store a model directory compressed, for mounts to serve as the original files",
		ArgsUsage: "SRC_DIR DEST   |   --verify [SRC_DIR] DEST",
		Description: `DEST is a local directory or s3://bucket/prefix. Each file of SRC_DIR of at
least --copy-below bytes is written as NAME.mfpack: frames of --frame-size
bytes of the original, each compressed on its own, with bf16/fp16 tensors
of safetensors and GGUF files byte-grouped first, plus an index. Smaller
files (config, tokenizer config) are copied as they are. A mount of DEST
shows every file under its original name, size and content.

With --verify nothing is written: every file of DEST is read back through
the decoder and its sha256 compared with the one its pack records and, when
SRC_DIR is given, with the original's.`,
		Flags: append(packSourceFlags(),
			&cli.StringFlag{Name: "frame-size", Value: "4MiB", Usage: "span of the original each frame covers (64KiB to 64MiB); a divisor of the mount's --block-size keeps block reads frame-aligned", EnvVars: env("FRAME_SIZE")},
			&cli.StringFlag{Name: "copy-below", Value: "64KiB", Usage: "copy files smaller than this as they are", EnvVars: env("COPY_BELOW")},
			&cli.BoolFlag{Name: "verify", Usage: "check DEST against the recorded sha256s (and SRC_DIR's files) instead of packing"},
		),
		Action: runPack,
	}
}

// packSourceFlags are the source flags that apply to reading and writing
// DEST; the cache flags do not.
func packSourceFlags() []cli.Flag {
	keep := map[string]bool{"region": true, "endpoint": true, "aws-profile": true, "no-sign-request": true,
		"concurrency": true, "request-timeout": true, "retries": true}
	var out []cli.Flag
	for _, f := range sourceFlags() {
		if keep[f.Names()[0]] {
			out = append(out, f)
		}
	}
	return out
}

func runPack(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if c.Int("concurrency") < 1 || c.Int("concurrency") > 1024 {
		return fmt.Errorf("pack: --concurrency %d: want 1 to 1024", c.Int("concurrency"))
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if c.Bool("verify") {
		switch c.NArg() {
		case 1:
			return verifyPacks(ctx, c, log, "", c.Args().Get(0))
		case 2:
			return verifyPacks(ctx, c, log, c.Args().Get(0), c.Args().Get(1))
		}
		return usagef("pack --verify: want [SRC_DIR] DEST (got %d arguments)", c.NArg())
	}
	if c.NArg() != 2 {
		return usagef("pack: want two arguments, SRC_DIR and DEST (got %d)", c.NArg())
	}
	frameSize, err := parseSize(c.String("frame-size"), "--frame-size")
	if err != nil {
		return err
	}
	if frameSize < pack.MinFrameSize || frameSize > pack.MaxFrameSize {
		return fmt.Errorf("pack: --frame-size %s: want 64KiB to 64MiB", c.String("frame-size"))
	}
	copyBelow, err := parseSize(c.String("copy-below"), "--copy-below")
	if err != nil {
		return err
	}
	srcDir := c.Args().Get(0)
	files, err := packWalk(srcDir, log)
	if err != nil {
		return err
	}
	dest, err := openPackDest(ctx, c, c.Args().Get(1), srcDir)
	if err != nil {
		return err
	}
	existing, err := dest.keys(ctx)
	if err != nil {
		return err
	}

	t0 := time.Now()
	var in, out int64
	for _, f := range files {
		n, err := packFile(ctx, dest, f, existing, frameSize, copyBelow, log)
		if err != nil {
			return fmt.Errorf("pack %s: %w", f.key, err)
		}
		in += f.size
		out += n
	}
	d := time.Since(t0)
	fmt.Printf("packed %d files into %s: %s -> %s (%.3f) in %s, %s/s\n", len(files), dest, formatSize(in), formatSize(out),
		float64(out)/float64(max(in, 1)), d.Round(time.Millisecond), formatSize(int64(float64(in)/max(d.Seconds(), 1e-3))))
	return nil
}

// packSrcFile is one regular file of SRC_DIR.
type packSrcFile struct {
	key  string // '/'-separated, relative to SRC_DIR
	path string
	size int64
}

// packWalk lists SRC_DIR's regular files by key, by modelformat's one
// model-directory walk (the mount's local source sees the same files):
// links are followed inside SRC_DIR and, for a Hugging Face cache
// snapshot, into its repository's blobs/; links elsewhere are skipped,
// with a warning naming them.
func packWalk(dir string, log *slog.Logger) ([]packSrcFile, error) {
	d, err := modeldir.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer d.Close()
	found, skipped, err := d.Walk(context.Background())
	if err != nil {
		return nil, fmt.Errorf("pack: reading %s: %w", dir, err)
	}
	for _, s := range skipped {
		log.Warn("not packed", "file", s.Path, "reason", s.Reason)
	}
	var files []packSrcFile
	for _, f := range found {
		if strings.HasSuffix(f.Path, pack.Suffix) {
			return nil, fmt.Errorf("pack: reading %s: %s: already a pack", dir, f.Path)
		}
		files = append(files, packSrcFile{key: f.Path, path: d.FilePath(f), size: f.Size})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("pack: %s holds no files", dir)
	}
	return files, nil
}

// packFile packs (or copies) one file and returns the bytes written.
func packFile(ctx context.Context, dest packDest, f packSrcFile, existing map[string]bool, frameSize, copyBelow int64, log *slog.Logger) (int64, error) {
	t0 := time.Now()
	r, err := os.Open(f.path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if f.size < copyBelow {
		w, err := dest.create(ctx, f.key, f.size)
		if err != nil {
			return 0, err
		}
		if _, err := io.Copy(w, io.NewSectionReader(r, 0, f.size)); err != nil {
			w.abort()
			return 0, err
		}
		if err := w.commit(); err != nil {
			return 0, err
		}
		// A pack from an earlier run would be hidden by the plain file
		// anyway; it is this command's own output, so it goes.
		if existing[f.key+pack.Suffix] {
			if err := dest.remove(ctx, f.key+pack.Suffix); err != nil {
				return 0, fmt.Errorf("removing the stale pack: %w", err)
			}
		}
		fmt.Printf("copied %s (%s)\n", f.key, formatSize(f.size))
		return f.size, nil
	}
	if existing[f.key] {
		// Not removed: it may be anyone's. Mounts show it, not the pack.
		log.Warn("DEST holds this file unpacked too: mounts will show that copy, not the pack; delete it to serve the pack",
			"file", f.key)
	}
	layout, err := pack.DetectLayout(f.key, r, f.size)
	if err != nil {
		log.Warn("packing without byte grouping: the tensor layout is unknown", "file", f.key, "err", err)
	}
	w, err := dest.create(ctx, f.key+pack.Suffix, f.size)
	if err != nil {
		return 0, err
	}
	ix, err := pack.Encode(ctx, w, r, f.size, pack.EncodeOptions{FrameSize: frameSize, Layout: layout})
	if err != nil {
		w.abort()
		return 0, err
	}
	if err := w.commit(); err != nil {
		return 0, err
	}
	n := ix.PackedSize()
	d := time.Since(t0)
	fmt.Printf("packed %s: %s -> %s (%.3f), %d frames, in %s, %s/s\n", f.key, formatSize(f.size), formatSize(n),
		float64(n)/float64(max(f.size, 1)), len(ix.Frames), d.Round(time.Millisecond),
		formatSize(int64(float64(f.size)/max(d.Seconds(), 1e-3))))
	return n, nil
}

// packDest is where packs are written: a local directory or an S3 prefix.
type packDest interface {
	// keys lists what DEST holds already.
	keys(ctx context.Context) (map[string]bool, error)
	// create starts writing key; size is the original's, for sizing.
	create(ctx context.Context, key string, size int64) (packWriter, error)
	remove(ctx context.Context, key string) error
	String() string
}

// packWriter is one object being written: nothing is visible at its key
// until commit, and abort leaves nothing behind.
type packWriter interface {
	io.Writer
	commit() error
	abort()
}

// openPackDest opens DEST for writing.
func openPackDest(ctx context.Context, c *cli.Context, dest, srcDir string) (packDest, error) {
	if !strings.Contains(dest, "://") {
		return newLocalDest(dest, srcDir)
	}
	loc, err := fetch.ParseLocation(dest)
	if err != nil {
		return nil, err
	}
	switch loc.Scheme {
	case "file":
		return newLocalDest(loc.Path, srcDir)
	case "s3":
	default:
		return nil, fmt.Errorf("pack: DEST %q: want a local directory or s3://bucket/prefix", dest)
	}
	client, err := packS3Client(ctx, c)
	if err != nil {
		return nil, err
	}
	src, err := packOpen(ctx, c, loc)
	if err != nil {
		return nil, err
	}
	prefix := loc.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/" // as a mount of the prefix takes it
	}
	return &s3Dest{client: client, bucket: loc.Bucket, prefix: prefix, src: src, inflight: min(c.Int("concurrency"), 8)}, nil
}

// packOpen opens a location as a source, as openModel does, without the
// pack layer.
func packOpen(ctx context.Context, c *cli.Context, loc fetch.Location) (fetch.Source, error) {
	log, err := newLogger(c)
	if err != nil {
		return nil, err
	}
	return fetch.Open(ctx, loc, fetch.OpenOptions{
		S3: fetch.S3Options{
			Region: c.String("region"), Endpoint: c.String("endpoint"), Profile: c.String("aws-profile"),
			NoSignRequest: c.Bool("no-sign-request"), MaxConns: c.Int("concurrency") * 2, Logger: log,
		},
		Retry: fetch.RetryOptions{MaxAttempts: c.Int("retries"), AttemptTimeout: c.Duration("request-timeout")},
	})
}

// packS3Client builds an S3 client configured like the S3 source's
// (fetch.NewS3), with the SDK's own retries: uploads have no range to
// resume, and a PUT is retried whole.
func packS3Client(ctx context.Context, c *cli.Context) (*s3.Client, error) {
	log, err := newLogger(c)
	if err != nil {
		return nil, err
	}
	opts := []func(*config.LoadOptions) error{
		config.WithLogger(fetch.SDKLogger(log)),
		config.WithRetryMaxAttempts(c.Int("retries")),
		// No per-request checksums: each frame carries an xxhash64, and
		// pack --verify checks the whole.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
	}
	if r := c.String("region"); r != "" {
		opts = append(opts, config.WithRegion(r))
	}
	if p := c.String("aws-profile"); p != "" {
		opts = append(opts, config.WithSharedConfigProfile(p))
	}
	if c.Bool("no-sign-request") {
		opts = append(opts, config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if ep := c.String("endpoint"); ep != "" {
			o.BaseEndpoint = aws.String(ep)
			o.UsePathStyle = true
		}
	}), nil
}

// localDest writes into a directory.
type localDest struct{ dir string }

func newLocalDest(dir, srcDir string) (*localDest, error) {
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
	return &localDest{dir: abs}, nil
}

func (d *localDest) String() string { return d.dir }

func (d *localDest) keys(ctx context.Context) (map[string]bool, error) {
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

func (d *localDest) create(ctx context.Context, key string, size int64) (packWriter, error) {
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

func (d *localDest) remove(ctx context.Context, key string) error {
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

func (w *localWriter) commit() error {
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

func (w *localWriter) abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// s3Dest writes under an S3 prefix.
type s3Dest struct {
	client   *s3.Client
	bucket   string
	prefix   string       // ends in "/" unless empty
	src      fetch.Source // the same prefix, for listing
	inflight int          // parts uploaded at once
}

func (d *s3Dest) String() string { return "s3://" + d.bucket + "/" + d.prefix }

func (d *s3Dest) keys(ctx context.Context) (map[string]bool, error) {
	objs, err := d.src.List(ctx)
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

func (d *s3Dest) remove(ctx context.Context, key string) error {
	_, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(d.prefix + key)})
	return err
}

// s3PartMin is the smallest part: S3 takes at least 5 MiB for every part
// but the last, and bigger parts mean fewer requests.
const s3PartMin = 16 << 20

func (d *s3Dest) create(ctx context.Context, key string, size int64) (packWriter, error) {
	// S3 takes at most 10 000 parts; a pack is never much bigger than its
	// original.
	part := max(s3PartMin, (size/9000+1<<20-1)&^(1<<20-1))
	return &s3Writer{ctx: ctx, d: d, key: d.prefix + key, partSize: int(part), sem: make(chan struct{}, d.inflight)}, nil
}

// s3Writer uploads an object: one PutObject if it fits one part,
// otherwise a multipart upload with parts sent in the background while
// the next ones are written.
type s3Writer struct {
	ctx      context.Context
	d        *s3Dest
	key      string
	partSize int
	buf      []byte
	uploadID *string
	sem      chan struct{}
	wg       sync.WaitGroup

	mu    sync.Mutex
	parts []types.CompletedPart
	err   error
}

func (w *s3Writer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), w.partSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == w.partSize {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush starts uploading the buffered part.
func (w *s3Writer) flush() error {
	if w.uploadID == nil {
		out, err := w.d.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(w.d.bucket), Key: aws.String(w.key)})
		if err != nil {
			return fmt.Errorf("starting the upload of %s: %w", w.key, err)
		}
		w.uploadID = out.UploadId
	}
	w.mu.Lock()
	err := w.err
	num := int32(len(w.parts) + 1)
	w.parts = append(w.parts, types.CompletedPart{PartNumber: aws.Int32(num)})
	w.mu.Unlock()
	if err != nil {
		return err
	}
	body := w.buf
	w.buf = make([]byte, 0, w.partSize)
	w.sem <- struct{}{}
	w.wg.Go(func() {
		defer func() { <-w.sem }()
		out, err := w.d.client.UploadPart(w.ctx, &s3.UploadPartInput{
			Bucket: aws.String(w.d.bucket), Key: aws.String(w.key), UploadId: w.uploadID,
			PartNumber: aws.Int32(num), Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
		})
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			w.err = cmp.Or(w.err, fmt.Errorf("uploading part %d of %s: %w", num, w.key, err))
			return
		}
		w.parts[num-1].ETag = out.ETag
	})
	return nil
}

func (w *s3Writer) commit() error {
	if w.uploadID == nil {
		_, err := w.d.client.PutObject(w.ctx, &s3.PutObjectInput{
			Bucket: aws.String(w.d.bucket), Key: aws.String(w.key),
			Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf))),
		})
		if err != nil {
			return fmt.Errorf("uploading %s: %w", w.key, err)
		}
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.flush(); err != nil {
			w.abort()
			return err
		}
	}
	w.wg.Wait()
	if w.err != nil {
		w.abort()
		return w.err
	}
	_, err := w.d.client.CompleteMultipartUpload(w.ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(w.d.bucket), Key: aws.String(w.key), UploadId: w.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
	})
	if err != nil {
		w.abort()
		return fmt.Errorf("completing the upload of %s: %w", w.key, err)
	}
	return nil
}

func (w *s3Writer) abort() {
	w.wg.Wait()
	if w.uploadID == nil {
		return
	}
	// A fresh context: the upload's may be the one that was cancelled,
	// and an upload left open keeps its parts billed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), time.Minute)
	defer cancel()
	_, _ = w.d.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(w.d.bucket), Key: aws.String(w.key), UploadId: w.uploadID,
	})
	w.uploadID = nil
}

// verifyPacks reads every file of DEST through the pack layer and checks
// its sha256 against the one its pack records and, with srcDir, against
// the original's.
func verifyPacks(ctx context.Context, c *cli.Context, log *slog.Logger, srcDir, dest string) error {
	if !strings.Contains(dest, "://") {
		abs, err := filepath.Abs(dest)
		if err != nil {
			return err
		}
		dest = "file://" + abs
	}
	loc, err := fetch.ParseLocation(dest)
	if err != nil {
		return err
	}
	inner, err := packOpen(ctx, c, loc)
	if err != nil {
		return err
	}
	src, err := wrapSource(ctx, inner, log)
	if err != nil {
		return err
	}
	objs, err := src.List(ctx)
	if err != nil {
		return fmt.Errorf("pack --verify: listing %s: %w", dest, err)
	}
	var originals map[string]packSrcFile
	if srcDir != "" {
		files, err := packWalk(srcDir, log)
		if err != nil {
			return err
		}
		originals = map[string]packSrcFile{}
		for _, f := range files {
			originals[f.key] = f
		}
	}
	t0 := time.Now()
	var failed []string
	var checked, total int64
	fail := func(key, format string, args ...any) {
		msg := key + ": " + fmt.Sprintf(format, args...)
		failed = append(failed, msg)
		fmt.Printf("FAILED %s\n", msg)
	}
	listed := map[string]bool{}
	for _, o := range objs {
		listed[o.Key] = true
		orig, haveOrig := originals[o.Key]
		if srcDir != "" && !haveOrig {
			log.Warn("not in SRC_DIR: checked against its pack only", "file", o.Key)
		}
		if haveOrig && orig.size != o.Size {
			fail(o.Key, "%d bytes, the original has %d", o.Size, orig.size)
			continue
		}
		var recorded []byte
		if o.Checksum.Algorithm == "SHA256" && !o.Checksum.Composite {
			recorded, _ = base64.StdEncoding.DecodeString(o.Checksum.Value)
		}
		if recorded == nil && !haveOrig {
			fmt.Printf("unchecked %s: no recorded sha256 and no original\n", o.Key)
			continue
		}
		got, err := packHashObject(ctx, src, o, min(c.Int("concurrency"), 8))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fail(o.Key, "%v", err)
			continue
		}
		if recorded != nil && !bytes.Equal(got, recorded) {
			fail(o.Key, "sha256 %x, its pack records %x", got, recorded)
			continue
		}
		if haveOrig {
			want, err := packHashFile(orig.path)
			if err != nil {
				return fmt.Errorf("pack --verify: %w", err)
			}
			if !bytes.Equal(got, want) {
				fail(o.Key, "sha256 %x, the original's is %x", got, want)
				continue
			}
		}
		checked++
		total += o.Size
		fmt.Printf("ok %s %x\n", o.Key, got)
	}
	for key := range originals {
		if !listed[key] {
			fail(key, "missing from %s", dest)
		}
	}
	d := time.Since(t0)
	if len(failed) > 0 {
		return fmt.Errorf("pack --verify: %d of %d files failed: %s", len(failed), len(objs), strings.Join(failed, "; "))
	}
	fmt.Printf("verified %d files, %s, in %s, %s/s\n", checked, formatSize(total), d.Round(time.Millisecond),
		formatSize(int64(float64(total)/max(d.Seconds(), 1e-3))))
	return nil
}

// packHashObject returns the sha256 of an object, read in chunks of which
// up to n are fetched and decoded at once while they are hashed in order.
func packHashObject(ctx context.Context, src fetch.Source, o fetch.Object, n int) ([]byte, error) {
	const chunk = 8 << 20 // two frames at the default span
	type result struct {
		b   []byte
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	order := make(chan chan result, n)
	go func() {
		defer close(order)
		for off := int64(0); off < o.Size; off += chunk {
			out := make(chan result, 1)
			select {
			case order <- out:
			case <-ctx.Done():
				return
			}
			go func() {
				b := make([]byte, min(chunk, o.Size-off))
				k, err := src.ReadAt(ctx, o, b, off)
				if err == io.EOF && k == len(b) {
					err = nil
				}
				out <- result{b, err}
			}()
		}
	}()
	h := sha256.New()
	for out := range order {
		r := <-out
		if r.err != nil {
			return nil, r.err
		}
		h.Write(r.b)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func packHashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return h.Sum(nil), nil
}
