package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/modelfs/modelfs/fetch"
)

// gcsChunk is a resumable upload's chunk: a multiple of what the API
// takes, big enough that requests are few.
const gcsChunk = 16 << 20

// GCSDest writes objects under a Cloud Storage prefix.
type GCSDest struct {
	g     *fetch.GCS // over the prefix, with a token that may write
	name  string
	chunk int // a multiple of fetch.GCSChunkAlign
}

// NewGCSDest writes with g, a source over the destination's prefix
// opened with GCSOptions.Write.
func NewGCSDest(g *fetch.GCS) *GCSDest {
	return &GCSDest{g: g, name: g.String(), chunk: gcsChunk}
}

func (d *GCSDest) String() string { return d.name }

// Keys lists the prefix; an empty or missing one holds nothing.
func (d *GCSDest) Keys(ctx context.Context) (map[string]bool, error) {
	return listKeys(ctx, d, d.g)
}

// Remove deletes key.
func (d *GCSDest) Remove(ctx context.Context, key string) error {
	return d.g.DeleteObject(ctx, key)
}

// Create starts writing key: one media upload if it ends within a chunk,
// else a resumable upload whose chunks are sent, one at a time, while the
// next is written.
func (d *GCSDest) Create(ctx context.Context, key string, size int64) (Writer, error) {
	return &gcsWriter{ctx: ctx, g: d.g, key: key, chunk: d.chunk, buf: make([]byte, 0, d.chunk)}, nil
}

// gcsWriter holds at most three chunks: the one being written, the one
// waiting to be sent and the one being sent.
type gcsWriter struct {
	ctx    context.Context
	g      *fetch.GCS
	key    string
	chunk  int
	buf    []byte
	upload *fetch.GCSUpload
	queue  chan []byte // chunks for the sender
	free   chan []byte // chunks it has sent, for reuse
	done   chan error  // the sender's result, once queue is closed
}

func (w *gcsWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), w.chunk-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == w.chunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush hands the full buffer to the sender, starting the upload first.
func (w *gcsWriter) flush() error {
	if w.upload == nil {
		u, err := w.g.StartUpload(w.ctx, w.key)
		if err != nil {
			return err
		}
		w.upload = u
		w.queue, w.free, w.done = make(chan []byte, 1), make(chan []byte, 2), make(chan error, 1)
		go w.send()
	}
	select {
	case w.queue <- w.buf:
	case err := <-w.done:
		// The sender stopped on an error; it is the writer's now.
		w.done <- err
		return err
	}
	select {
	case w.buf = <-w.free:
		w.buf = w.buf[:0]
	default:
		w.buf = make([]byte, 0, w.chunk)
	}
	return nil
}

// send uploads queued chunks in order until the queue closes or one
// fails.
func (w *gcsWriter) send() {
	for b := range w.queue {
		if err := w.upload.Write(w.ctx, b); err != nil {
			w.done <- err
			return
		}
		select {
		case w.free <- b:
		default:
		}
	}
	w.done <- nil
}

func (w *gcsWriter) Commit() error {
	if w.upload == nil {
		if err := w.g.PutObject(w.ctx, w.key, w.buf); err != nil {
			return fmt.Errorf("uploading %s: %w", w.key, err)
		}
		return nil
	}
	close(w.queue)
	err := <-w.done
	if err == nil {
		err = w.upload.Finish(w.ctx, w.buf)
	}
	if err != nil {
		w.cancel()
		return fmt.Errorf("uploading %s: %w", w.key, err)
	}
	w.upload = nil
	return nil
}

// Abort stops the sender and cancels the session, so that nothing is
// stored and the chunks sent are dropped.
func (w *gcsWriter) Abort() {
	if w.upload == nil {
		return
	}
	close(w.queue)
	<-w.done
	w.cancel()
}

func (w *gcsWriter) cancel() {
	// A fresh context: the upload's may be the one that was cancelled.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), time.Minute)
	defer cancel()
	_ = w.upload.Cancel(ctx)
	w.upload = nil
}

// openGCSDest opens gs://bucket/prefix with Application Default
// Credentials scoped to write (or the emulator's STORAGE_EMULATOR_HOST,
// or cfg.S3's endpoint).
func openGCSDest(ctx context.Context, loc fetch.Location, cfg Config) (Dest, error) {
	if cfg.S3.NoSignRequest {
		return nil, errors.New("pack: --no-sign-request: writing to Cloud Storage needs credentials")
	}
	prefix := loc.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/" // as a mount of the prefix takes it
	}
	g, err := fetch.NewGCS(ctx, fetch.GCSOptions{
		Bucket: loc.Bucket, Prefix: prefix, Endpoint: cfg.S3.Endpoint, MaxConns: cfg.Concurrency * 2,
		Logger: cfg.log(), Retry: cfg.Retry, Write: true,
	})
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return NewGCSDest(g), nil
}
