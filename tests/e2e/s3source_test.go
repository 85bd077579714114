package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/tests/s3server"
)

// The S3 Source, driven against the S3 server with the real SDK.

func newS3Source(t *testing.T, r *remote, prefix string, mod func(*fetch.S3Options)) *fetch.S3 {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", accessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secretKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	opts := fetch.S3Options{
		Bucket: bucket, Prefix: prefix, Endpoint: r.srv.URL(), Region: region,
		Retry: fetch.RetryOptions{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, AttemptTimeout: 5 * time.Second},
	}
	if mod != nil {
		mod(&opts)
	}
	src, err := fetch.NewS3(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestS3SourceListsManyObjects(t *testing.T) {
	r := newRemote(t)
	r.srv.CreateBucket(bucket)
	const n = 2500 // more than two pages of ListObjectsV2
	for i := range n {
		if _, err := r.srv.PutObject(bucket, fmt.Sprintf("many/d%02d/f%04d", i%25, i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	src := newS3Source(t, r, "many", nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != n {
		t.Fatalf("listed %d objects, want %d", len(objs), n)
	}
	for _, o := range objs {
		if strings.HasPrefix(o.Key, "many/") || o.ETag == "" || o.Size == 0 {
			t.Fatalf("object %+v: want a key relative to the prefix, an ETag and a size", o)
		}
	}
}

func TestS3SourceSingleObjectPrefix(t *testing.T) {
	r := newRemote(t)
	r.srv.CreateBucket(bucket)
	r.srv.PutObject(bucket, "models/tiny.gguf", []byte("GGUF-bytes"))
	src := newS3Source(t, r, "models/tiny.gguf", nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "tiny.gguf" {
		t.Fatalf("listing a prefix that names one object: %+v", objs)
	}
	p := make([]byte, 4)
	if _, err := src.ReadAt(context.Background(), objs[0], p, 0); err != nil || string(p) != "GGUF" {
		t.Fatalf("ReadAt = %q, %v", p, err)
	}
}

func TestS3SourceRetriesTransientFailures(t *testing.T) {
	r := newRemote(t)
	r.srv.CreateBucket(bucket)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	r.srv.PutObject(bucket, "m/w.bin", data)
	src := newS3Source(t, r, "m", nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	faults := map[string]func(w http.ResponseWriter){
		"503 SlowDown": func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		},
		"500": func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `<Error><Code>InternalError</Code><Message>boom</Message></Error>`)
		},
		"truncated body": func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "65536")
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-65535/%d", len(data)))
			w.Header().Set("ETag", objs[0].ETag)
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:1000])
		},
	}
	partial := func(w http.ResponseWriter) {
		w.Header().Set("Content-Length", "65536")
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-65535/%d", len(data)))
		w.Header().Set("ETag", objs[0].ETag)
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[:1000])
		w.(http.Flusher).Flush()
	}
	faults["reset mid-body"] = func(w http.ResponseWriter) {
		partial(w)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
				tc.SetLinger(0) // RST, not FIN
			}
			conn.Close()
		}
	}
	faults["wrong Content-Range"] = func(w http.ResponseWriter) {
		w.Header().Set("Content-Length", "65536")
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 65536-131071/%d", len(data)))
		w.Header().Set("ETag", objs[0].ETag)
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[65536:131072])
	}
	for name, fault := range faults {
		t.Run(name, func(t *testing.T) {
			var failures atomic.Int32
			r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
				if req.Method == http.MethodGet && failures.Add(1) <= 2 {
					fault(w)
					return true
				}
				return false
			})
			defer r.srv.SetHook(nil)
			p := make([]byte, 65536)
			if _, err := src.ReadAt(context.Background(), objs[0], p, 0); err != nil {
				t.Fatalf("ReadAt after two failures: %v", err)
			}
			if !bytes.Equal(p, data[:65536]) {
				t.Fatal("wrong bytes after retries")
			}
			if got := failures.Load(); got != 3 {
				t.Fatalf("%d GETs, want 3 (two failures, one success)", got)
			}
		})
	}
	t.Run("stalled body", func(t *testing.T) {
		// The body stops after a few bytes; the attempt deadline abandons
		// it and the retry succeeds.
		stalled := newS3Source(t, r, "m", func(o *fetch.S3Options) { o.Retry.AttemptTimeout = 300 * time.Millisecond })
		var failures atomic.Int32
		r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
			if req.Method == http.MethodGet && failures.Add(1) == 1 {
				partial(w)
				<-req.Context().Done()
				return true
			}
			return false
		})
		defer r.srv.SetHook(nil)
		p := make([]byte, 65536)
		if _, err := stalled.ReadAt(context.Background(), objs[0], p, 0); err != nil {
			t.Fatalf("ReadAt after a stalled body: %v", err)
		}
		if !bytes.Equal(p, data[:65536]) || failures.Load() != 2 {
			t.Fatalf("after a stall: %d GETs, bytes equal %v; want 2 and true", failures.Load(), bytes.Equal(p, data[:65536]))
		}
	})
	t.Run("budget spent", func(t *testing.T) {
		var gets atomic.Int32
		r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
			gets.Add(1)
			faults["500"](w)
			return true
		})
		defer r.srv.SetHook(nil)
		_, err := src.ReadAt(context.Background(), objs[0], make([]byte, 10), 0)
		if err == nil || !strings.Contains(err.Error(), "giving up after 4 attempts") {
			t.Fatalf("err = %v, want giving up after 4 attempts", err)
		}
		if gets.Load() != 4 {
			t.Fatalf("%d GETs, want 4", gets.Load())
		}
	})
}

func TestS3SourceVersionPinning(t *testing.T) {
	r := newRemote(t)
	r.srv.CreateBucket(bucket)
	r.srv.PutObject(bucket, "m/w.bin", []byte("version one"))
	src := newS3Source(t, r, "m/", nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.srv.PutObject(bucket, "m/w.bin", []byte("version two"))
	_, err = src.ReadAt(context.Background(), objs[0], make([]byte, 5), 0)
	if !errors.Is(err, fetch.ErrChanged) {
		t.Fatalf("read of a replaced object: %v, want ErrChanged", err)
	}
	if strings.Contains(err.Error(), "giving up") {
		t.Fatalf("a changed object was retried: %v", err)
	}
}

func TestS3SourceAnonymousPublicBucket(t *testing.T) {
	srv, err := s3server.New(s3server.Options{Dir: t.TempDir(), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.CreateBucket(bucket)
	srv.PutObject(bucket, "pub/config.json", []byte(`{"public":true}`))
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	src, err := fetch.NewS3(context.Background(), fetch.S3Options{Bucket: bucket, Prefix: "pub", Endpoint: srv.URL(), NoSignRequest: true})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := src.List(context.Background())
	if err != nil || len(objs) != 1 {
		t.Fatalf("anonymous list: %v, %v", objs, err)
	}
	p := make([]byte, objs[0].Size)
	if _, err := src.ReadAt(context.Background(), objs[0], p, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if string(p) != `{"public":true}` {
		t.Fatalf("read %q", p)
	}
}
