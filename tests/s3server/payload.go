package s3server

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Request bodies reach S3 in one of these forms, chosen by the client through
// x-amz-content-sha256:
//
//   - a hex SHA-256: a plain body which must hash to that value. The SDK does
//     this over plain HTTP, with the CRC32 checksum in a header;
//   - UNSIGNED-PAYLOAD: a plain body, not hashed (presigned URLs);
//   - STREAMING-UNSIGNED-PAYLOAD-TRAILER: aws-chunked framing, with the
//     checksum in a trailer. The SDK does this by default over HTTPS;
//   - STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]: aws-chunked framing in
//     which every chunk (and the trailer) carries a signature chained from the
//     request's signature. Other SDKs and S3-compatible clients use it.
//
// aws-chunked: https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html
//
//	<hex size>[;chunk-signature=<sig>]\r\n<data>\r\n   (repeated)
//	0[;chunk-signature=<sig>]\r\n
//	<name>:<value>\r\n                                (trailers, optional)
//	[x-amz-trailer-signature:<sig>\r\n]
//	\r\n

// payload is a request body with its transfer encoding removed.
type payload struct {
	io.Reader
	length  int64        // decoded length the client declared
	chunked *chunkReader // non-nil for aws-chunked bodies
}

// trailer returns the trailers of an aws-chunked body, once it has been read.
func (p *payload) trailer() http.Header {
	if p.chunked == nil {
		return nil
	}
	return p.chunked.trailer
}

// openPayload sets up decoding and verification of the request body.
func openPayload(r *http.Request, auth *authInfo) (*payload, *apiError) {
	if !strings.HasPrefix(auth.payloadHash, "STREAMING-") {
		if r.ContentLength < 0 {
			return nil, errMissingContentLength
		}
		p := &payload{Reader: r.Body, length: r.ContentLength}
		if auth.payloadHash != unsignedPayload {
			p.Reader = &sha256Reader{r: r.Body, h: sha256.New(), want: strings.ToLower(auth.payloadHash)}
		}
		return p, nil
	}
	length, err := strconv.ParseInt(r.Header.Get("x-amz-decoded-content-length"), 10, 64)
	if err != nil || length < 0 {
		return nil, errMissingContentLength.withMessage("You must provide the x-amz-decoded-content-length header with aws-chunked uploads.")
	}
	c := &chunkReader{
		r:         bufio.NewReaderSize(r.Body, 64<<10),
		remaining: length,
		trailer:   http.Header{},
	}
	if auth.payloadHash != streamingUnsignedTrailer {
		c.auth = auth
		c.prevSig = auth.seedSignature
		c.signedTrailer = auth.payloadHash == streamingSignedTrailer
	}
	return &payload{Reader: c, length: length, chunked: c}, nil
}

// sha256Reader fails the final read if the body does not hash to want.
type sha256Reader struct {
	r    io.Reader
	h    hash.Hash
	want string
}

func (s *sha256Reader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(s.h.Sum(nil)); got != s.want {
			return n, errSHA256Mismatch.with("ClientComputedContentSHA256", s.want).with("S3ComputedContentSHA256", got)
		}
	}
	return n, err
}

var (
	errMalformedChunk = errInvalidRequest.withMessage("The aws-chunked encoding of the request body is malformed.")
	errChunkTooLong   = errInvalidRequest.withMessage("The aws-chunked body is longer than x-amz-decoded-content-length.")
)

// chunkReader decodes an aws-chunked body, verifying chunk signatures when
// the body is signed.
type chunkReader struct {
	r         *bufio.Reader
	remaining int64 // decoded bytes still allowed by x-amz-decoded-content-length
	left      int64 // bytes left in the current chunk
	inChunk   bool

	auth          *authInfo // nil for unsigned bodies
	signedTrailer bool
	prevSig       string    // signature of the previous chunk (the seed first)
	chunkSig      string    // the current chunk's claimed signature
	chunkHash     hash.Hash // SHA-256 of the current chunk's data

	trailer http.Header
	err     error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if !c.inChunk {
		if err := c.startChunk(); err != nil {
			c.err = err
			return 0, err
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.chunkHash != nil {
		c.chunkHash.Write(p[:n])
	}
	if c.left == 0 {
		err = c.endChunk()
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	c.err = err
	return n, err
}

// startChunk reads a chunk header; for the final chunk it also reads the
// trailers and returns io.EOF.
func (c *chunkReader) startChunk() error {
	line, err := c.readLine()
	if err != nil {
		return err
	}
	sizeHex, ext, _ := strings.Cut(line, ";")
	size, err := strconv.ParseInt(sizeHex, 16, 64)
	if err != nil || size < 0 {
		return errMalformedChunk
	}
	if size > c.remaining {
		return errChunkTooLong
	}
	c.remaining -= size
	if c.auth != nil {
		sig, ok := strings.CutPrefix(ext, "chunk-signature=")
		if !ok {
			return errMalformedChunk
		}
		c.chunkSig = sig
		c.chunkHash = sha256.New()
	}
	if size > 0 {
		c.left, c.inChunk = size, true
		return nil
	}
	if err := c.verifyChunk(); err != nil {
		return err
	}
	if err := c.readTrailers(); err != nil {
		return err
	}
	if c.remaining != 0 {
		return errIncompleteBody
	}
	return io.EOF
}

// endChunk consumes the CRLF after a chunk's data and checks its signature.
func (c *chunkReader) endChunk() error {
	c.inChunk = false
	if line, err := c.readLine(); err != nil {
		return err
	} else if line != "" {
		return errMalformedChunk
	}
	return c.verifyChunk()
}

// verifyChunk checks the chained signature of the chunk just read:
// HMAC(key, "AWS4-HMAC-SHA256-PAYLOAD\n" + date + "\n" + scope + "\n" +
// previous signature + "\n" + hash("") + "\n" + hash(chunk data)).
func (c *chunkReader) verifyChunk() error {
	if c.auth == nil {
		return nil
	}
	sts := strings.Join([]string{
		"AWS4-HMAC-SHA256-PAYLOAD", c.auth.amzDate, c.auth.scope, c.prevSig,
		emptySHA256, hex.EncodeToString(c.chunkHash.Sum(nil)),
	}, "\n")
	return c.checkSignature(sts, c.chunkSig)
}

func (c *chunkReader) checkSignature(stringToSign, provided string) error {
	want := hmacHex(c.auth.signingKey, stringToSign)
	if !hmac.Equal([]byte(want), []byte(provided)) {
		return errSignatureMismatch.with("StringToSign", stringToSign).with("SignatureProvided", provided)
	}
	c.prevSig = want
	return nil
}

// readTrailers reads the "name:value" lines of the trailer section.
func (c *chunkReader) readTrailers() error {
	var signed strings.Builder // the trailer as covered by the trailer signature
	var trailerSig string
	for {
		line, err := c.readTrailerLine()
		if err != nil {
			return err
		}
		if line == "" {
			// The section ends with an empty line. Some clients (minio-go)
			// end the trailers with "\n\r\n" before the signature line,
			// so a signed trailer ends only after its signature.
			if !c.signedTrailer || trailerSig != "" {
				break
			}
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return errMalformedTrailer
		}
		name, value = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)
		if name == "x-amz-trailer-signature" {
			trailerSig = value
			continue
		}
		c.trailer.Add(name, value)
		signed.WriteString(name + ":" + value + "\n")
	}
	if !c.signedTrailer {
		return nil
	}
	// HMAC(key, "AWS4-HMAC-SHA256-TRAILER\n" + date + "\n" + scope + "\n" +
	// last chunk signature + "\n" + hash(trailer lines, "\n"-terminated)).
	sum := sha256.Sum256([]byte(signed.String()))
	sts := strings.Join([]string{
		"AWS4-HMAC-SHA256-TRAILER", c.auth.amzDate, c.auth.scope, c.prevSig, hex.EncodeToString(sum[:]),
	}, "\n")
	return c.checkSignature(sts, trailerSig)
}

// readLine returns the next CRLF-terminated line without its terminator.
func (c *chunkReader) readLine() (string, error) {
	line, err := c.readRawLine()
	if err != nil {
		return "", err
	}
	s, ok := strings.CutSuffix(line, "\r\n")
	if !ok {
		return "", errMalformedChunk
	}
	return s, nil
}

// readTrailerLine is readLine for the trailer section, where lines ending
// in a bare LF are accepted too.
func (c *chunkReader) readTrailerLine() (string, error) {
	line, err := c.readRawLine()
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), nil
}

func (c *chunkReader) readRawLine() (string, error) {
	line, err := c.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", errMalformedChunk
	case errors.Is(err, io.EOF):
		return "", io.ErrUnexpectedEOF
	case err != nil:
		return "", err
	}
	return string(line), nil
}
