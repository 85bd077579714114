package fetch

import (
	"context"
	"fmt"
	"io"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Caps on what the SDK reads of S3 replies into memory. It copies an
// error reply's whole body to find the error code, and decodes a listing
// page whole; an endpoint can send any amount of either. Real error
// documents are under 1 KiB, real pages of 1000 keys under 2 MiB.
const (
	s3ErrorBodyMax = 64 << 10
	s3ListBodyMax  = 8 << 20
)

// limitBodies caps the body of every error reply and listing page before
// the SDK's deserializer reads it. Added last to the Deserialize step, it
// sits between that deserializer and the transport.
func limitBodies(stack *middleware.Stack) error {
	return stack.Deserialize.Add(bodyLimit{}, middleware.After)
}

type bodyLimit struct{}

func (bodyLimit) ID() string { return "modelfs.BodyLimit" }

func (bodyLimit) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error) {
	out, md, err := next.HandleDeserialize(ctx, in)
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if !ok || resp.Body == nil {
		return out, md, err
	}
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		resp.Body = &cappedBody{r: io.LimitReader(resp.Body, s3ErrorBodyMax+1), c: resp.Body, max: s3ErrorBodyMax, what: "error reply"}
	case awsmiddleware.GetOperationName(ctx) == "ListObjectsV2":
		resp.Body = &cappedBody{r: io.LimitReader(resp.Body, s3ListBodyMax+1), c: resp.Body, max: s3ListBodyMax, what: "listing page"}
	}
	return out, md, err
}

// cappedBody fails once more than max bytes arrive, so that the SDK
// reports a clear error rather than parsing a cut document; after that it
// reads as ended, so nothing drains the rest.
type cappedBody struct {
	r    io.Reader
	c    io.Closer
	max  int64
	what string
	read int64
	over bool
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read > b.max {
		b.over = true
		return 0, fmt.Errorf("%s is longer than %d bytes", b.what, b.max)
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.c.Close() }
