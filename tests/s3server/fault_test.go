package s3server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/modelfs/modelfs/tests/s3server"
)

// faultClient is an SDK client that does not retry, so each call is
// exactly one request and sees the injected fault itself.
func faultClient(srv *s3server.Server) *s3.Client {
	return newClient(srv.URL(), creds, func(o *s3.Options) { o.Retryer = aws.NopRetryer{} })
}

// injectOnce makes the next request get f; later ones are served normally.
// The returned channel is closed when the faulted request's handler is done.
func injectOnce(srv *s3server.Server, f s3server.Fault) <-chan struct{} {
	done := make(chan struct{})
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		srv.SetHook(nil)
		defer close(done)
		srv.ServeFault(w, r, f)
		return true
	})
	return done
}

func TestFaultErrorResponses(t *testing.T) {
	srv, _ := setup(t, s3server.Options{})
	if _, err := srv.PutObject(bucket, "k", randomBytes(1000, 1)); err != nil {
		t.Fatal(err)
	}
	c := faultClient(srv)
	for _, tc := range []struct {
		fault  s3server.Fault
		status int
		code   string
	}{
		{s3server.Fault{Kind: s3server.FaultInternalError}, 500, "InternalError"},
		{s3server.Fault{Kind: s3server.FaultSlowDown, RetryAfter: 3}, 503, "SlowDown"},
	} {
		done := injectOnce(srv, tc.fault)
		_, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("k")})
		<-done
		wantAPIError(t, err, tc.code, tc.status)
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) && tc.fault.Kind == s3server.FaultSlowDown {
			if got := re.Response.Header.Get("Retry-After"); got != "3" {
				t.Errorf("SlowDown Retry-After = %q, want 3", got)
			}
		}
	}
	if n := srv.Stats().Gets; n != 0 {
		t.Errorf("error faults counted %d GETs, want 0", n)
	}
}

func TestFaultsCutTheBodyShort(t *testing.T) {
	srv, _ := setup(t, s3server.Options{})
	data := randomBytes(1<<20, 2)
	if _, err := srv.PutObject(bucket, "k", data); err != nil {
		t.Fatal(err)
	}
	c := faultClient(srv)
	const off, length = 4096, 256 << 10
	for _, kind := range []s3server.FaultKind{s3server.FaultReset, s3server.FaultTruncated, s3server.FaultStall} {
		t.Run(string(kind), func(t *testing.T) {
			done := injectOnce(srv, s3server.Fault{Kind: kind})
			// The stall ends only when the client gives up: this deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"), Range: aws.String("bytes=4096-266239")})
			if err != nil {
				t.Fatalf("headers of a %s response: %v, want them intact", kind, err)
			}
			if aws.ToInt64(out.ContentLength) != length || aws.ToString(out.ContentRange) != "bytes 4096-266239/1048576" {
				t.Errorf("Content-Length %d, Content-Range %q: want the real ones", aws.ToInt64(out.ContentLength), aws.ToString(out.ContentRange))
			}
			got, err := io.ReadAll(out.Body)
			out.Body.Close()
			if err == nil {
				t.Fatalf("body of a %s response read without error (%d bytes)", kind, len(got))
			}
			// A reset may discard what was in flight; never more than half arrives.
			if len(got) > length/2 || (kind != s3server.FaultReset && len(got) != length/2) {
				t.Errorf("%d body bytes arrived, want half of %d", len(got), length)
			}
			if !bytes.Equal(got, data[off:off+len(got)]) {
				t.Error("the bytes sent before the fault are not the object's")
			}
			<-done
		})
	}
	if n := srv.Stats().Gets; n != 3 {
		t.Errorf("%d GETs counted, want the 3 served before their body broke", n)
	}
	// A failure response is not cut: it is sent whole.
	done := injectOnce(srv, s3server.Fault{Kind: s3server.FaultTruncated})
	_, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("missing")})
	<-done
	wantAPIError(t, err, "NoSuchKey", 404)
}

func TestFaultLatency(t *testing.T) {
	srv, _ := setup(t, s3server.Options{})
	data := randomBytes(1000, 3)
	if _, err := srv.PutObject(bucket, "k", data); err != nil {
		t.Fatal(err)
	}
	c := faultClient(srv)

	const delay = 50 * time.Millisecond
	done := injectOnce(srv, s3server.Fault{Kind: s3server.FaultLatency, Delay: delay})
	start := time.Now()
	got, _ := get(t, c, &s3.GetObjectInput{Key: aws.String("k")})
	if took := time.Since(start); took < delay {
		t.Errorf("a response delayed by %v came after %v", delay, took)
	}
	if !bytes.Equal(got, data) {
		t.Error("a delayed response has the wrong bytes")
	}
	<-done

	// Held longer than the client waits: the handler ends when it gives up.
	done = injectOnce(srv, s3server.Fault{Kind: s3server.FaultLatency, Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("k")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET held past the client's deadline: %v, want DeadlineExceeded", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the held handler did not end after the client gave up")
	}
}

func TestFaultUnknownKind(t *testing.T) {
	srv, _ := setup(t, s3server.Options{})
	done := injectOnce(srv, s3server.Fault{Kind: "nonsense"})
	_, err := faultClient(srv).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("k")})
	<-done
	wantAPIError(t, err, "InternalError", 500)
}
