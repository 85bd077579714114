package publish

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// partMin is the smallest part: S3 takes at least 5 MiB for every part
// but the last, and bigger parts mean fewer requests.
const partMin = 16 << 20

// partSize is the part size for an object of about size bytes: S3 takes
// at most 10 000 parts, and a pack is never much bigger than its original.
func partSize(size int64) int {
	return int(max(partMin, (size/9000+1<<20-1)&^(1<<20-1)))
}

// s3Writer uploads an object: one PutObject if it fits one part,
// otherwise a multipart upload with parts sent in the background while
// the next ones are written.
type s3Writer struct {
	ctx      context.Context
	client   *s3.Client
	bucket   string
	key      string
	p        pieces // the parts
	uploadID *string

	mu    sync.Mutex // parts, filled in as uploads finish
	parts []types.CompletedPart
}

func (w *s3Writer) Write(p []byte) (int, error) {
	if err := w.p.write(p, w.flush); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush starts uploading the buffered part.
func (w *s3Writer) flush() error {
	if w.uploadID == nil {
		out, err := w.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(w.bucket), Key: aws.String(w.key)})
		if err != nil {
			return fmt.Errorf("starting the upload of %s: %w", w.key, err)
		}
		w.uploadID = out.UploadId
	}
	if err := w.p.failed(); err != nil {
		return err
	}
	w.mu.Lock()
	num := int32(len(w.parts) + 1)
	w.parts = append(w.parts, types.CompletedPart{PartNumber: aws.Int32(num)})
	w.mu.Unlock()
	w.p.send(func(body []byte) error {
		out, err := w.client.UploadPart(w.ctx, &s3.UploadPartInput{
			Bucket: aws.String(w.bucket), Key: aws.String(w.key), UploadId: w.uploadID,
			PartNumber: aws.Int32(num), Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
		})
		if err != nil {
			return fmt.Errorf("uploading part %d of %s: %w", num, w.key, err)
		}
		w.mu.Lock()
		w.parts[num-1].ETag = out.ETag
		w.mu.Unlock()
		return nil
	})
	return nil
}

func (w *s3Writer) Commit() error {
	if w.uploadID == nil {
		_, err := w.client.PutObject(w.ctx, &s3.PutObjectInput{
			Bucket: aws.String(w.bucket), Key: aws.String(w.key),
			Body: bytes.NewReader(w.p.buf), ContentLength: aws.Int64(int64(len(w.p.buf))),
		})
		if err != nil {
			return fmt.Errorf("uploading %s: %w", w.key, err)
		}
		return nil
	}
	if len(w.p.buf) > 0 {
		if err := w.flush(); err != nil {
			w.Abort()
			return err
		}
	}
	if err := w.p.wait(); err != nil {
		w.Abort()
		return err
	}
	_, err := w.client.CompleteMultipartUpload(w.ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(w.bucket), Key: aws.String(w.key), UploadId: w.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
	})
	if err != nil {
		w.Abort()
		return fmt.Errorf("completing the upload of %s: %w", w.key, err)
	}
	return nil
}

func (w *s3Writer) Abort() {
	w.p.wait()
	if w.uploadID == nil {
		return
	}
	// A fresh context: the upload's may be the one that was cancelled,
	// and an upload left open keeps its parts billed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), time.Minute)
	defer cancel()
	_, _ = w.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(w.bucket), Key: aws.String(w.key), UploadId: w.uploadID,
	})
	w.uploadID = nil
}
