package s3server

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// The example from "Signature Calculations for the Authorization Header:
// Transferring Payload in Multiple Chunks" in the S3 API reference: 66560
// bytes of 'a' sent as a 65536-byte chunk, a 1024-byte chunk and the final
// empty chunk, with the signatures AWS publishes for them.
const (
	docSecret    = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	docAmzDate   = "20130524T000000Z"
	docScope     = "20130524/us-east-1/s3/aws4_request"
	docSeed      = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
	docChunk1Sig = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
	docChunk2Sig = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
	docFinalSig  = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
)

func docAuth() *authInfo {
	return &authInfo{
		payloadHash:   streamingSigned,
		signingKey:    signingKey(docSecret, "20130524", "us-east-1", "s3"),
		amzDate:       docAmzDate,
		scope:         docScope,
		seedSignature: docSeed,
	}
}

func docBody(sig1, sig2, final string) string {
	return fmt.Sprintf("10000;chunk-signature=%s\r\n%s\r\n400;chunk-signature=%s\r\n%s\r\n0;chunk-signature=%s\r\n\r\n",
		sig1, strings.Repeat("a", 65536), sig2, strings.Repeat("a", 1024), final)
}

func newTestChunkReader(body string, length int64, auth *authInfo) *chunkReader {
	c := &chunkReader{r: bufio.NewReader(strings.NewReader(body)), remaining: length, trailer: map[string][]string{}}
	if auth != nil {
		c.auth, c.prevSig = auth, auth.seedSignature
		c.signedTrailer = auth.payloadHash == streamingSignedTrailer
	}
	return c
}

// The seed signature of the documented example is what verify computes; it
// is the anchor of the chunk signature chain below.
func TestSignedChunksDocExample(t *testing.T) {
	got, err := io.ReadAll(newTestChunkReader(docBody(docChunk1Sig, docChunk2Sig, docFinalSig), 66560, docAuth()))
	if err != nil {
		t.Fatalf("decoding the documented example: %v", err)
	}
	if want := strings.Repeat("a", 66560); string(got) != want {
		t.Fatalf("decoded %d bytes, want %d bytes of 'a'", len(got), len(want))
	}
}

func TestSignedChunksRejectTampering(t *testing.T) {
	tests := map[string]string{
		"wrong first signature": docBody(docChunk2Sig, docChunk2Sig, docFinalSig),
		"wrong final signature": docBody(docChunk1Sig, docChunk2Sig, docChunk1Sig),
		"modified data":         strings.Replace(docBody(docChunk1Sig, docChunk2Sig, docFinalSig), "aaaa", "aaab", 1),
		"missing signature":     strings.Replace(docBody(docChunk1Sig, docChunk2Sig, docFinalSig), ";chunk-signature="+docChunk1Sig, "", 1),
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := io.ReadAll(newTestChunkReader(body, 66560, docAuth()))
			var aerr *apiError
			if !errors.As(err, &aerr) || (aerr.Code != "SignatureDoesNotMatch" && aerr.Code != "InvalidRequest") {
				t.Fatalf("got %v, want SignatureDoesNotMatch or InvalidRequest", err)
			}
		})
	}
}

func TestUnsignedChunksWithTrailer(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160000 bytes
	var body bytes.Buffer
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 65536)
		fmt.Fprintf(&body, "%x\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	body.WriteString("0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n")

	c := newTestChunkReader(body.String(), int64(len(data)), nil)
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("decoded %d bytes that differ from the %d sent", len(got), len(data))
	}
	if v := c.trailer.Get("x-amz-checksum-crc32"); v != "AAAAAA==" {
		t.Fatalf("trailer x-amz-checksum-crc32 = %q", v)
	}
}

func TestChunksMalformed(t *testing.T) {
	tests := map[string]struct {
		body   string
		length int64
	}{
		"truncated data":        {"10\r\n0123456789", 16},
		"no CRLF after data":    {"4\r\nabcdXY0\r\n\r\n", 4},
		"bad size":              {"zz\r\nabcd\r\n0\r\n\r\n", 4},
		"longer than declared":  {"8\r\nabcdefgh\r\n0\r\n\r\n", 4},
		"shorter than declared": {"4\r\nabcd\r\n0\r\n\r\n", 8},
		"no final chunk":        {"4\r\nabcd\r\n", 4},
		"malformed trailer":     {"4\r\nabcd\r\n0\r\nno-colon\r\n\r\n", 4},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := io.ReadAll(newTestChunkReader(tc.body, tc.length, nil)); err == nil {
				t.Fatal("malformed body decoded without error")
			}
		})
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		spec            string
		size            int64
		start, length   int64
		ok, satisfiable bool
	}{
		{"bytes=0-9", 100, 0, 10, true, true},
		{"bytes=90-", 100, 90, 10, true, true},
		{"bytes=-10", 100, 90, 10, true, true},
		{"bytes=-1000", 100, 0, 100, true, true},
		{"bytes=50-1000", 100, 50, 50, true, true},
		{"bytes=100-", 100, 0, 0, true, false},
		{"bytes=-0", 100, 0, 0, true, false},
		{"bytes=0-", 0, 0, 0, true, false},
		{"bytes=5-4", 100, 0, 0, false, false},
		{"bytes=0-1,5-6", 100, 0, 0, false, false},
		{"items=0-1", 100, 0, 0, false, false},
		{"bytes=a-b", 100, 0, 0, false, false},
	}
	for _, tc := range tests {
		start, length, ok, sat := parseRange(tc.spec, tc.size)
		if start != tc.start || length != tc.length || ok != tc.ok || sat != tc.satisfiable {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v, %v; want %d, %d, %v, %v",
				tc.spec, tc.size, start, length, ok, sat, tc.start, tc.length, tc.ok, tc.satisfiable)
		}
	}
}

// Signed trailers come in two layouts: "name:value\r\n" lines as in the S3
// documentation, and "name:value\n\r\n" as minio-go sends them. Both are
// covered by the same signature over the "\n"-terminated lines.
func TestSignedTrailer(t *testing.T) {
	auth := docAuth()
	auth.payloadHash = streamingSignedTrailer
	const scope, date = docScope, docAmzDate
	sign := func(prev string, parts ...string) string {
		return hmacHex(auth.signingKey, strings.Join(append([]string{parts[0], date, scope, prev}, parts[1:]...), "\n"))
	}
	sha := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }

	sig1 := sign(docSeed, "AWS4-HMAC-SHA256-PAYLOAD", emptySHA256, sha("hello"))
	sig0 := sign(sig1, "AWS4-HMAC-SHA256-PAYLOAD", emptySHA256, emptySHA256)
	trailerSig := sign(sig0, "AWS4-HMAC-SHA256-TRAILER", sha("x-amz-checksum-crc32:NhCmhg==\n"))
	head := "5;chunk-signature=" + sig1 + "\r\nhello\r\n0;chunk-signature=" + sig0 + "\r\n"

	for name, tc := range map[string]struct {
		body string
		ok   bool
	}{
		"documented layout": {head + "x-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:" + trailerSig + "\r\n\r\n", true},
		"minio-go layout":   {head + "x-amz-checksum-crc32:NhCmhg==\n\r\nx-amz-trailer-signature:" + trailerSig + "\r\n\r\n", true},
		"modified trailer":  {head + "x-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:" + trailerSig + "\r\n\r\n", false},
		"missing signature": {head + "x-amz-checksum-crc32:NhCmhg==\r\n\r\n", false},
	} {
		t.Run(name, func(t *testing.T) {
			c := newTestChunkReader(tc.body, 5, auth)
			got, err := io.ReadAll(c)
			if !tc.ok {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil || string(got) != "hello" || c.trailer.Get("x-amz-checksum-crc32") != "NhCmhg==" {
				t.Fatalf("got %q, %v, trailer %v", got, err, c.trailer)
			}
		})
	}
}
