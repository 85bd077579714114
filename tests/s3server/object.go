package s3server

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// defaultContentType is served for objects stored without a Content-Type.
const defaultContentType = "application/octet-stream"

// storedHeaders are the standard headers S3 keeps with an object and returns
// on GET and HEAD; x-amz-meta-* user metadata is kept as well.
var storedHeaders = []string{"Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control", "Expires"}

// overrideParams are GET/HEAD query parameters that override stored headers
// in the response.
var overrideParams = []string{"response-content-type", "response-content-language", "response-expires", "response-cache-control", "response-content-disposition", "response-content-encoding"}

func (s *Server) getObject(w http.ResponseWriter, req *request) *apiError {
	head := req.Method == http.MethodHead
	if head {
		s.stats.heads.Add(1)
	} else {
		s.countGet(req.bucket, req.key)
	}
	h := w.Header()
	obj, f, err := s.store.get(req.bucket, req.key, req.query.Get("versionId"), !head)
	if err != nil {
		if obj != nil && obj.deleteMarker {
			h.Set("x-amz-delete-marker", "true")
			if obj.versionID != "" {
				h.Set("x-amz-version-id", obj.versionID)
			}
		}
		return err
	}
	if f != nil {
		defer f.Close()
	}

	switch status, condition := evalConditions(req.Request, obj); status {
	case http.StatusNotModified:
		h.Set("ETag", obj.etag)
		h.Set("Last-Modified", obj.modTime.UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusNotModified)
		return nil
	case http.StatusPreconditionFailed:
		return errPreconditionFailed.with("Condition", condition)
	}
	if req.auth.anonymous && slices.ContainsFunc(overrideParams, req.query.Has) {
		return errInvalidRequest.withMessage("Request specific response headers cannot be used for anonymous GET requests.")
	}
	start, length, partial, rerr := selectRange(req, obj, h)
	if rerr != nil {
		return rerr
	}

	setObjectHeaders(h, obj)
	for _, p := range overrideParams {
		if v := req.query.Get(p); v != "" {
			h.Set(strings.TrimPrefix(p, "response-"), v)
		}
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, obj.size))
	}
	// Like S3, return the stored checksum when asked, as long as the
	// response covers the whole object (the checksum describes only that).
	if obj.checksum.algorithm != "" && length == obj.size && strings.EqualFold(req.Header.Get("x-amz-checksum-mode"), "ENABLED") {
		h.Set(checksumHeader(obj.checksum.algorithm), obj.checksum.value)
		h.Set("x-amz-checksum-type", obj.checksum.checksumType())
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if head || length == 0 {
		return nil
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return nil // headers are out; returning short makes net/http drop the connection
	}
	// io.CopyN hands net/http an io.LimitedReader over the *os.File, which
	// it sends with sendfile(2) on plain TCP connections.
	n, _ := io.CopyN(w, f, length)
	s.stats.bytes.Add(n)
	return nil
}

// setObjectHeaders sets the metadata headers of GET and HEAD responses.
func setObjectHeaders(h http.Header, obj *object) {
	h.Set("ETag", obj.etag)
	h.Set("Last-Modified", obj.modTime.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", defaultContentType)
	for k, v := range obj.header {
		h[k] = v // user metadata keys are stored lower-case, as S3 returns them
	}
	if obj.versionID != "" {
		h.Set("x-amz-version-id", obj.versionID)
	}
	if len(obj.partSizes) > 0 {
		h.Set("x-amz-mp-parts-count", strconv.Itoa(len(obj.partSizes)))
	}
}

// evalConditions applies the conditional request headers as S3 does (which
// follows RFC 9110 section 13.2.2): If-Match takes precedence over
// If-Unmodified-Since, If-None-Match over If-Modified-Since. It returns 0 to
// proceed, or 304 or 412 with the header that failed.
func evalConditions(r *http.Request, obj *object) (int, string) {
	if v := r.Header.Get("If-Match"); v != "" {
		if !etagMatches(v, obj.etag) {
			return http.StatusPreconditionFailed, "If-Match"
		}
	} else if t, err := http.ParseTime(r.Header.Get("If-Unmodified-Since")); err == nil && obj.modTime.After(t) {
		return http.StatusPreconditionFailed, "If-Unmodified-Since"
	}
	if v := r.Header.Get("If-None-Match"); v != "" {
		if etagMatches(v, obj.etag) {
			return http.StatusNotModified, ""
		}
	} else if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !obj.modTime.After(t) {
		return http.StatusNotModified, ""
	}
	return 0, ""
}

// etagMatches reports whether a comma-separated If-Match/If-None-Match list
// names etag. S3 accepts the entity tags with or without quotes.
func etagMatches(list, etag string) bool {
	if strings.TrimSpace(list) == "*" {
		return true
	}
	want := strings.Trim(etag, `"`)
	for t := range strings.SplitSeq(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if strings.Trim(t, `"`) == want {
			return true
		}
	}
	return false
}

// selectRange works out which bytes to send from the Range header or the
// partNumber parameter. partial reports a 206 response.
func selectRange(req *request, obj *object, h http.Header) (start, length int64, partial bool, err *apiError) {
	rangeHeader := req.Header.Get("Range")
	if pn := req.query.Get("partNumber"); pn != "" {
		if rangeHeader != "" {
			return 0, 0, false, errInvalidRequest.withMessage("Cannot specify both Range header and partNumber query parameter")
		}
		n, perr := strconv.Atoi(pn)
		if perr != nil || n < 1 || n > maxParts {
			return 0, 0, false, errInvalidArgument.withMessage("Part number must be an integer between 1 and 10000, inclusive").with("ArgumentName", "partNumber").with("ArgumentValue", pn)
		}
		parts := obj.partSizes
		if parts == nil {
			parts = []int64{obj.size} // a single-part object is its own part 1
		}
		if n > len(parts) {
			return 0, 0, false, errInvalidPartNumber.with("PartNumberRequested", pn).with("ActualPartCount", strconv.Itoa(len(parts)))
		}
		for _, size := range parts[:n-1] {
			start += size
		}
		return start, parts[n-1], parts[n-1] > 0, nil
	}
	if rangeHeader == "" {
		return 0, obj.size, false, nil
	}
	start, length, ok, satisfiable := parseRange(rangeHeader, obj.size)
	switch {
	case !ok: // S3 ignores a Range header it cannot parse
		return 0, obj.size, false, nil
	case !satisfiable:
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", obj.size))
		return 0, 0, false, errInvalidRange.with("RangeRequested", rangeHeader).with("ActualObjectSize", strconv.FormatInt(obj.size, 10))
	}
	return start, length, true, nil
}

// parseRange parses a single byte range: bytes=a-b, bytes=a- or bytes=-n.
// ok is false for anything else (including multiple ranges, which S3 does
// not support); satisfiable is false when no byte of the object is covered.
func parseRange(spec string, size int64) (start, length int64, ok, satisfiable bool) {
	spec, ok = strings.CutPrefix(strings.TrimSpace(spec), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix range: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, true, false
		}
		n = min(n, size)
		return size - n, n, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, 0, false, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false, false
		}
	}
	if a >= size {
		return 0, 0, true, false
	}
	b = min(b, size-1)
	return a, b - a + 1, true, true
}

func (s *Server) putObject(w http.ResponseWriter, req *request) *apiError {
	s.stats.puts.Add(1)
	// Check the bucket before receiving what may be gigabytes.
	if err := s.store.bucketExists(req.bucket); err != nil {
		return err
	}
	check, err := writeConditions(req)
	if err != nil {
		return err
	}
	data, err := s.receive(req)
	if err != nil {
		return err
	}
	obj := data.object(req.key, s.clock())
	obj.header = metadataFrom(req.Header)
	if err := s.store.put(req.bucket, obj, check); err != nil {
		_ = os.Remove(obj.path)
		return err
	}
	h := w.Header()
	h.Set("ETag", obj.etag)
	if obj.versionID != "" {
		h.Set("x-amz-version-id", obj.versionID)
	}
	if obj.checksum.algorithm != "" {
		h.Set(checksumHeader(obj.checksum.algorithm), obj.checksum.value)
		h.Set("x-amz-checksum-type", obj.checksum.checksumType())
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// receive stores the request body (of PutObject or UploadPart) in a new data
// file and verifies it against everything the client declared: length,
// x-amz-content-sha256, chunk signatures, Content-MD5, x-amz-checksum-*.
func (s *Server) receive(req *request) (written, *apiError) {
	p, err := openPayload(req.Request, req.auth)
	if err != nil {
		return written{}, err
	}
	if p.length > maxObjectSize {
		return written{}, errEntityTooLarge.with("ProposedSize", strconv.FormatInt(p.length, 10)).with("MaxSizeAllowed", strconv.Itoa(maxObjectSize))
	}
	spec, err := requestChecksum(req.Request)
	if err != nil {
		return written{}, err
	}
	if spec.trailer && p.chunked == nil {
		return written{}, errMalformedTrailer.withMessage("x-amz-trailer requires an aws-chunked body.")
	}
	var contentMD5 []byte
	if v := req.Header.Get("Content-MD5"); v != "" {
		if contentMD5, _ = base64.StdEncoding.DecodeString(v); len(contentMD5) != md5.Size {
			return written{}, errInvalidDigest
		}
	}

	// Like S3 since December 2024, a body sent without a checksum gets a
	// full-object CRC64NVME all the same.
	algorithm := spec.algorithm
	if algorithm == "" {
		algorithm = defaultChecksum
	}
	data, werr := s.store.write(p, algorithm)
	if werr != nil {
		return written{}, bodyError(werr)
	}
	fail := func(e *apiError) (written, *apiError) {
		_ = os.Remove(data.path)
		return written{}, e
	}
	if data.size != p.length {
		return fail(errIncompleteBody)
	}
	if contentMD5 != nil && !bytes.Equal(contentMD5, data.md5) {
		return fail(errBadDigest.with("ExpectedDigest", base64.StdEncoding.EncodeToString(contentMD5)).with("CalculatedDigest", base64.StdEncoding.EncodeToString(data.md5)))
	}
	if spec.algorithm != "" {
		want := spec.value
		if spec.trailer {
			want = p.trailer().Get(checksumHeader(spec.algorithm))
			if want == "" || !validChecksumValue(spec.algorithm, want) {
				return fail(errMalformedTrailer)
			}
		}
		if want != data.checksum.value {
			return fail(checksumMismatch(spec.algorithm))
		}
	}
	return data, nil
}

// writeConditions implements S3's conditional writes: If-None-Match: *
// (create only) and If-Match: <etag> (replace only that version).
func writeConditions(req *request) (precondition, *apiError) {
	ifMatch, ifNoneMatch := req.Header.Get("If-Match"), req.Header.Get("If-None-Match")
	if ifNoneMatch != "" && strings.TrimSpace(ifNoneMatch) != "*" {
		return nil, notImplemented("If-None-Match")
	}
	if ifMatch == "" && ifNoneMatch == "" {
		return nil, nil
	}
	return func(cur *object) *apiError {
		switch {
		case ifNoneMatch != "" && cur != nil:
			return errPreconditionFailed.with("Condition", "If-None-Match")
		case ifMatch != "" && cur == nil:
			return errNoSuchKey.with("Key", req.key)
		case ifMatch != "" && !etagMatches(ifMatch, cur.etag):
			return errPreconditionFailed.with("Condition", "If-Match")
		}
		return nil
	}, nil
}

// metadataFrom picks the headers S3 stores with an object from a PUT (or
// CreateMultipartUpload) request.
func metadataFrom(in http.Header) http.Header {
	out := http.Header{}
	for _, k := range storedHeaders {
		if v := in.Get(k); v != "" {
			out.Set(k, v)
		}
	}
	// aws-chunked only describes how this request's body was framed.
	if enc := in.Get("Content-Encoding"); enc != "" {
		var keep []string
		for e := range strings.SplitSeq(enc, ",") {
			if e = strings.TrimSpace(e); e != "" && !strings.EqualFold(e, "aws-chunked") {
				keep = append(keep, e)
			}
		}
		out.Del("Content-Encoding")
		if len(keep) > 0 {
			out.Set("Content-Encoding", strings.Join(keep, ","))
		}
	}
	for k, v := range in {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-amz-meta-") {
			out[lk] = v
		}
	}
	return out
}

func (s *Server) deleteObject(w http.ResponseWriter, req *request) *apiError {
	obj, err := s.store.remove(req.bucket, req.key, req.query.Get("versionId"), s.clock())
	if err != nil {
		return err
	}
	if obj != nil && obj.versionID != "" {
		h := w.Header()
		h.Set("x-amz-version-id", obj.versionID)
		if obj.deleteMarker {
			h.Set("x-amz-delete-marker", "true")
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// lastModifiedXML formats a timestamp as S3 does in XML documents.
func lastModifiedXML(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}
