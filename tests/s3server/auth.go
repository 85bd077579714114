package s3server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4 verification, written from the specification:
// https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html
//
// Both forms S3 accepts are supported: the Authorization header and presigned
// URLs (X-Amz-* query parameters). Request bodies are authenticated through
// x-amz-content-sha256 (see payload.go).

const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	amzDateFormat   = "20060102T150405Z"
	credentialDate  = "20060102"
	scopeTerminator = "aws4_request"
	maxClockSkew    = 15 * time.Minute
	maxPresignAge   = 7 * 24 * time.Hour

	// Values of x-amz-content-sha256 other than a hex SHA-256.
	unsignedPayload          = "UNSIGNED-PAYLOAD"
	streamingSigned          = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTrailer   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	emptySHA256              = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// authInfo is what authentication established about a request.
type authInfo struct {
	anonymous   bool
	payloadHash string // x-amz-content-sha256, or UNSIGNED-PAYLOAD

	// Needed to verify the chained chunk signatures of
	// STREAMING-AWS4-HMAC-SHA256-PAYLOAD bodies.
	signingKey    []byte
	amzDate       string
	scope         string
	seedSignature string
}

// sigV4 holds the signature parameters of a request, from either form.
type sigV4 struct {
	accessKey, date, region, service, terminator string
	signedHeaders                                []string
	signature                                    string
	amzDate                                      string
}

// authenticate checks the request's signature, or whether it may go unsigned.
func (s *Server) authenticate(r *http.Request, q url.Values) (*authInfo, *apiError) {
	if authz := r.Header.Get("Authorization"); authz != "" {
		return s.authHeader(r, q, authz)
	}
	if q.Has("X-Amz-Algorithm") || q.Has("X-Amz-Signature") {
		return s.authPresigned(r, q)
	}
	if q.Has("AWSAccessKeyId") || q.Has("Signature") {
		return nil, errInvalidRequest.withMessage("The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
	}
	if !s.opts.AllowAnonymous {
		return nil, errAccessDenied
	}
	hash := r.Header.Get("x-amz-content-sha256")
	if hash == "" {
		hash = unsignedPayload
	}
	if !validPayloadHash(hash) || hash == streamingSigned || hash == streamingSignedTrailer {
		return nil, errInvalidArgument.withMessage("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, or a valid sha256 value.")
	}
	return &authInfo{anonymous: true, payloadHash: hash}, nil
}

func (s *Server) authHeader(r *http.Request, q url.Values, authz string) (*authInfo, *apiError) {
	algorithm, rest, _ := strings.Cut(authz, " ")
	if algorithm != sigV4Algorithm {
		// SigV2 ("AWS AKID:sig") and SigV4a are not supported, as in newer S3 regions.
		return nil, errInvalidRequest.withMessage("The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, errAuthHeaderMalformed
		}
		fields[k] = v
	}
	sig := sigV4{signature: fields["Signature"]}
	if !sig.parseCredential(fields["Credential"]) || fields["SignedHeaders"] == "" || sig.signature == "" {
		return nil, errAuthHeaderMalformed
	}
	sig.signedHeaders = strings.Split(fields["SignedHeaders"], ";")

	sig.amzDate = r.Header.Get("X-Amz-Date")
	if sig.amzDate == "" {
		// The spec allows the Date header instead; the string to sign still
		// uses the ISO 8601 basic form.
		t, err := http.ParseTime(r.Header.Get("Date"))
		if err != nil {
			return nil, errAccessDenied.withMessage("AWS authentication requires a valid Date or x-amz-date header")
		}
		sig.amzDate = t.UTC().Format(amzDateFormat)
	}
	payloadHash := r.Header.Get("x-amz-content-sha256")
	if payloadHash == "" {
		return nil, errMissingSecurityHeader
	}
	if !validPayloadHash(payloadHash) {
		return nil, errInvalidArgument.withMessage("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, or a valid sha256 value.").
			with("ArgumentName", "x-amz-content-sha256").with("ArgumentValue", payloadHash)
	}
	t, aerr := s.checkScope(&sig, errAuthHeaderMalformed)
	if aerr != nil {
		return nil, aerr
	}
	if d := time.Since(t); d > maxClockSkew || d < -maxClockSkew {
		return nil, errRequestTimeTooSkewed.
			with("RequestTime", sig.amzDate).
			with("ServerTime", time.Now().UTC().Format(time.RFC3339)).
			with("MaxAllowedSkewMilliseconds", "900000")
	}
	return s.verify(r, q, &sig, payloadHash, "")
}

func (s *Server) authPresigned(r *http.Request, q url.Values) (*authInfo, *apiError) {
	malformed := errAuthQueryMalformed.withMessage("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
	if q.Get("X-Amz-Algorithm") != sigV4Algorithm {
		return nil, errAuthQueryMalformed.withMessage("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
	}
	sig := sigV4{signature: q.Get("X-Amz-Signature"), amzDate: q.Get("X-Amz-Date")}
	if !sig.parseCredential(q.Get("X-Amz-Credential")) || sig.signature == "" || sig.amzDate == "" || q.Get("X-Amz-SignedHeaders") == "" {
		return nil, malformed
	}
	sig.signedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	expires, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || expires < 0 {
		return nil, malformed
	}
	if time.Duration(expires)*time.Second > maxPresignAge {
		return nil, errAuthQueryMalformed.withMessage("X-Amz-Expires must be less than a week (in seconds) that is 604800")
	}
	t, aerr := s.checkScope(&sig, errAuthQueryMalformed)
	if aerr != nil {
		return nil, aerr
	}
	now := time.Now()
	if now.After(t.Add(time.Duration(expires) * time.Second)) {
		return nil, errRequestExpired.with("X-Amz-Expires", strconv.Itoa(expires)).with("Expires", t.Add(time.Duration(expires)*time.Second).UTC().Format(time.RFC3339)).with("ServerTime", now.UTC().Format(time.RFC3339))
	}
	if t.After(now.Add(maxClockSkew)) {
		return nil, errAccessDenied.withMessage("Request is not valid yet")
	}
	payloadHash := q.Get("X-Amz-Content-Sha256")
	if payloadHash == "" {
		payloadHash = unsignedPayload
	}
	if !validPayloadHash(payloadHash) || strings.HasPrefix(payloadHash, "STREAMING-") {
		return nil, errInvalidArgument.withMessage("X-Amz-Content-Sha256 must be UNSIGNED-PAYLOAD or a valid sha256 value.")
	}
	return s.verify(r, q, &sig, payloadHash, "X-Amz-Signature")
}

// parseCredential splits AKID/yyyymmdd/region/service/aws4_request.
func (sig *sigV4) parseCredential(cred string) bool {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 {
		return false
	}
	sig.accessKey, sig.date, sig.region, sig.service, sig.terminator = parts[0], parts[1], parts[2], parts[3], parts[4]
	return true
}

// checkScope validates the access key and the credential scope, returning the
// request time. malformed is the error family of the signature's form.
func (s *Server) checkScope(sig *sigV4, malformed *apiError) (time.Time, *apiError) {
	if !s.knownKey(sig.accessKey) {
		return time.Time{}, errInvalidAccessKeyID.with("AWSAccessKeyId", sig.accessKey)
	}
	if sig.service != "s3" || sig.terminator != scopeTerminator {
		return time.Time{}, malformed.withMessage(fmt.Sprintf("Error parsing the Credential: the service '%s' or terminator '%s' is wrong; expecting 's3' and 'aws4_request'", sig.service, sig.terminator))
	}
	if sig.region != s.opts.Region {
		return time.Time{}, malformed.withMessage(fmt.Sprintf("The authorization header is malformed; the region '%s' is wrong; expecting '%s'", sig.region, s.opts.Region)).with("Region", s.opts.Region)
	}
	t, err := time.Parse(amzDateFormat, sig.amzDate)
	if err != nil {
		return time.Time{}, malformed.withMessage("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
	}
	if sig.date != t.Format(credentialDate) {
		return time.Time{}, malformed.withMessage("Invalid credential date. Date is not the same as X-Amz-Date.")
	}
	if !slices.Contains(sig.signedHeaders, "host") {
		return time.Time{}, errAccessDenied.withMessage("The host header must be signed.")
	}
	return t, nil
}

// verify recomputes the signature and compares it with the one provided.
// skipParam names the query parameter carrying the signature itself.
func (s *Server) verify(r *http.Request, q url.Values, sig *sigV4, payloadHash, skipParam string) (*authInfo, *apiError) {
	secret, aerr := s.secretFor(sig.accessKey, r, q)
	if aerr != nil {
		return nil, aerr
	}
	scope := strings.Join([]string{sig.date, sig.region, sig.service, scopeTerminator}, "/")
	key := signingKey(secret, sig.date, sig.region, sig.service)
	query := canonicalQuery(q, skipParam)
	headers := canonicalHeaders(r, sig.signedHeaders)

	// The canonical URI is the path as the client encoded it on the wire: S3
	// does not encode it a second time. Clients that send some characters
	// unencoded but sign their spec encoding are accepted too.
	uris := []string{r.URL.EscapedPath()}
	if alt := uriEncode(r.URL.Path, false); alt != uris[0] {
		uris = append(uris, alt)
	}
	var canonical, toSign string
	for i, uri := range uris {
		if uri == "" {
			uri = "/"
		}
		c := strings.Join([]string{r.Method, uri, query, headers, strings.Join(sig.signedHeaders, ";"), payloadHash}, "\n")
		sts := stringToSign(sig.amzDate, scope, c)
		if hmac.Equal([]byte(hmacHex(key, sts)), []byte(sig.signature)) {
			return &authInfo{payloadHash: payloadHash, signingKey: key, amzDate: sig.amzDate, scope: scope, seedSignature: sig.signature}, nil
		}
		if i == 0 {
			canonical, toSign = c, sts
		}
	}
	// S3 returns what it signed, which is what makes mismatches debuggable.
	return nil, errSignatureMismatch.
		with("AWSAccessKeyId", sig.accessKey).
		with("StringToSign", toSign).
		with("SignatureProvided", sig.signature).
		with("CanonicalRequest", canonical)
}

func stringToSign(amzDate, scope, canonicalRequest string) string {
	sum := sha256.Sum256([]byte(canonicalRequest))
	return sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSum([]byte("AWS4"+secret), date)
	k = hmacSum(k, region)
	k = hmacSum(k, service)
	return hmacSum(k, scopeTerminator)
}

func hmacSum(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func hmacHex(key []byte, data string) string { return hex.EncodeToString(hmacSum(key, data)) }

// canonicalQuery encodes every parameter (except skip) per the spec, sorted by
// name and then value.
func canonicalQuery(q url.Values, skip string) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range q {
		if k == skip {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, pair{uriEncode(k, true), uriEncode(v, true)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// canonicalHeaders renders "name:value\n" for each signed header, in the order
// the client listed them (which the spec requires to be sorted).
func canonicalHeaders(r *http.Request, signed []string) string {
	var b strings.Builder
	for _, name := range signed {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(headerValue(r, name))
		b.WriteByte('\n')
	}
	return b.String()
}

// headerValue returns a header's canonical value. net/http moves some headers
// out of r.Header; those are taken from where it puts them.
func headerValue(r *http.Request, name string) string {
	switch name {
	case "host":
		return r.Host
	case "content-length":
		if r.Header.Get("Content-Length") == "" && r.ContentLength >= 0 {
			return strconv.FormatInt(r.ContentLength, 10)
		}
	case "transfer-encoding":
		if len(r.TransferEncoding) > 0 {
			return strings.Join(r.TransferEncoding, ",")
		}
	}
	var values []string // not r.Header.Values: that aliases the request's slice
	for _, v := range r.Header.Values(name) {
		values = append(values, strings.Join(strings.Fields(v), " "))
	}
	return strings.Join(values, ",")
}

// uriEncode percent-encodes every byte except the unreserved characters
// (A-Z a-z 0-9 - _ . ~), and '/' unless encodeSlash, as SigV4 specifies.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~', c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

func validPayloadHash(h string) bool {
	switch h {
	case unsignedPayload, streamingSigned, streamingSignedTrailer, streamingUnsignedTrailer:
		return true
	}
	_, err := hex.DecodeString(h)
	return err == nil && len(h) == 2*sha256.Size
}
