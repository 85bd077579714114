package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The baselines bound what a mount could do against the same server:
// raw-get is the network limit, download-then-read is the status quo it
// replaces, local-read is the warm limit.

const (
	rawWorkers   = 16
	rawRangeSize = 8 << 20
)

// newS3Client is a plain SDK client for endpoint, configured the way
// modelfs configures its own (no SDK retries, no compression, no response
// checksums on ranged reads, enough connections for every worker), so the
// baseline differs from the mount only in what the mount adds.
// roots, when not nil, are the only CAs it trusts (the bench's own, with
// --tls).
func newS3Client(endpoint, region, accessKey, secretKey string, roots *x509.CertPool) *s3.Client {
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		if roots != nil {
			tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		}
		tr.MaxIdleConns = 2 * rawWorkers
		tr.MaxIdleConnsPerHost = 2 * rawWorkers
		tr.MaxConnsPerHost = 2 * rawWorkers
		tr.DisableCompression = true
	})
	return s3.New(s3.Options{
		Region:                     region,
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		HTTPClient:                 httpClient,
		Retryer:                    aws.NopRetryer{},
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// rangeJob is one ranged GET.
type rangeJob struct {
	file     modelFile
	off, len int64
}

func rangeJobs(files []modelFile) []rangeJob {
	var jobs []rangeJob
	for _, f := range files {
		for off := int64(0); off < f.Size; off += rawRangeSize {
			jobs = append(jobs, rangeJob{file: f, off: off, len: min(rawRangeSize, f.Size-off)})
		}
	}
	return jobs
}

// parallelGet fetches every range of files with rawWorkers workers, each
// with one reused 8 MiB buffer, and hands each filled range to sink (which
// may be nil: discard).
func parallelGet(ctx context.Context, client *s3.Client, bucket, prefix string, files []modelFile, sink func(rangeJob, []byte) error) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan rangeJob)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		errs  []error
	)
	for range rawWorkers {
		wg.Go(func() {
			buf := make([]byte, rawRangeSize)
			for j := range jobs {
				n, err := getRange(ctx, client, bucket, prefix+j.file.Name, j.off, buf[:j.len])
				if err == nil && sink != nil {
					err = sink(j, buf[:n])
				}
				mu.Lock()
				total += int64(n)
				if err != nil {
					errs = append(errs, err)
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	for _, j := range rangeJobs(files) {
		select {
		case jobs <- j:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		return total, errors.Join(errs...)
	}
	return total, ctx.Err()
}

func getRange(ctx context.Context, client *s3.Client, bucket, key string, off int64, p []byte) (int, error) {
	out, err := client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(bucket),
		Key:    aws.String(key),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1)),
	})
	if err != nil {
		return 0, fmt.Errorf("GET %s bytes %d+%d: %w", key, off, len(p), err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p)
	if err != nil {
		return n, fmt.Errorf("GET %s bytes %d+%d: body: %w", key, off, len(p), err)
	}
	return n, nil
}

// downloadThenRead is what an init container does: download every file in
// parallel to local disk (pwrite of each range; no fsync, as such
// containers do not either), then the application reads the copy
// sequentially.
func downloadThenRead(ctx context.Context, client *s3.Client, bucket, prefix string, files []modelFile, dir string) (int64, error) {
	if err := os.RemoveAll(dir); err != nil {
		return 0, fmt.Errorf("clearing %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	out := map[string]*os.File{}
	defer func() {
		for _, f := range out {
			f.Close()
		}
	}()
	var names []string
	for _, mf := range files {
		f, err := os.Create(filepath.Join(dir, mf.Name))
		if err != nil {
			return 0, fmt.Errorf("download: %w", err)
		}
		out[mf.Name] = f
		names = append(names, mf.Name)
	}
	_, err := parallelGet(ctx, client, bucket, prefix, files, func(j rangeJob, p []byte) error {
		if _, err := out[j.file.Name].WriteAt(p, j.off); err != nil {
			return fmt.Errorf("download: writing %s: %w", j.file.Name, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for name, f := range out {
		delete(out, name)
		if err := f.Close(); err != nil {
			return 0, fmt.Errorf("download: closing %s: %w", name, err)
		}
	}
	return readSeq(ctx, dir, names)
}
