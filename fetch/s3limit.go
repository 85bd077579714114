package fetch

import (
	"context"
	"fmt"
	"io"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// s3ErrorBodyMax bounds what is read of an S3 error reply. The SDK copies
// the whole body into memory to find the error code, and an endpoint can
// send any amount; real S3 error documents are well under 1 KiB.
const s3ErrorBodyMax = 64 << 10

// limitErrorBodies caps the body of every non-2xx reply before the SDK's
// deserializer reads it. Added last to the Deserialize step, it sits
// between that deserializer and the transport.
func limitErrorBodies(stack *middleware.Stack) error {
	return stack.Deserialize.Add(errorBodyLimit{}, middleware.After)
}

type errorBodyLimit struct{}

func (errorBodyLimit) ID() string { return "modelfs.ErrorBodyLimit" }

func (errorBodyLimit) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error) {
	out, md, err := next.HandleDeserialize(ctx, in)
	if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp.Body != nil &&
		(resp.StatusCode < 200 || resp.StatusCode > 299) {
		resp.Body = &cappedBody{r: io.LimitReader(resp.Body, s3ErrorBodyMax+1), c: resp.Body}
	}
	return out, md, err
}

// cappedBody fails once more than s3ErrorBodyMax bytes arrive, so that
// the SDK reports a clear error rather than parsing a cut document; after
// that it reads as ended, so nothing drains the rest.
type cappedBody struct {
	r    io.Reader
	c    io.Closer
	read int64
	over bool
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read > s3ErrorBodyMax {
		b.over = true
		return 0, fmt.Errorf("error reply is longer than %d bytes", s3ErrorBodyMax)
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.c.Close() }
