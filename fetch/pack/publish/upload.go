package publish

import (
	"bytes"
	"cmp"
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
	partSize int
	buf      []byte
	uploadID *string
	sem      chan struct{}
	// free holds the buffers of uploaded parts for the next ones, so
	// that memory stays at the parts in flight plus one, with no garbage.
	free chan []byte
	wg   sync.WaitGroup

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
		out, err := w.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(w.bucket), Key: aws.String(w.key)})
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
	w.sem <- struct{}{}
	select {
	case b := <-w.free:
		w.buf = b[:0]
	default:
		w.buf = make([]byte, 0, w.partSize)
	}
	w.wg.Go(func() {
		defer func() {
			select {
			case w.free <- body:
			default:
			}
			<-w.sem
		}()
		out, err := w.client.UploadPart(w.ctx, &s3.UploadPartInput{
			Bucket: aws.String(w.bucket), Key: aws.String(w.key), UploadId: w.uploadID,
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

func (w *s3Writer) Commit() error {
	if w.uploadID == nil {
		_, err := w.client.PutObject(w.ctx, &s3.PutObjectInput{
			Bucket: aws.String(w.bucket), Key: aws.String(w.key),
			Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf))),
		})
		if err != nil {
			return fmt.Errorf("uploading %s: %w", w.key, err)
		}
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.flush(); err != nil {
			w.Abort()
			return err
		}
	}
	w.wg.Wait()
	if w.err != nil {
		w.Abort()
		return w.err
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
	w.wg.Wait()
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
