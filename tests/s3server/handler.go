package s3server

import (
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// request is an authenticated request, addressed path-style:
// /bucket/key.
type request struct {
	*http.Request
	query  url.Values
	auth   *authInfo
	bucket string
	key    string
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("x-amz-request-id", s.newRequestID())
	h.Set("x-amz-id-2", s.hostID)
	h.Set("Server", "AmazonS3")
	if hook := s.hook.Load(); hook != nil && (*hook)(w, r) {
		return
	}
	if isSTS(r) {
		s.serveSTS(w, r)
		return
	}
	if err := s.serve(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

// serve authenticates and dispatches a request. Handlers return an error
// instead of writing one, so every failure is reported the same way.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) *apiError {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return errInvalidArgument.withMessage("The query string is malformed.")
	}
	auth, aerr := s.authenticate(r, q)
	if aerr != nil {
		return aerr
	}
	// r.URL.Path is already percent-decoded: S3 keys are the decoded path.
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	req := &request{Request: r, query: q, auth: auth, bucket: bucket, key: key}
	switch {
	case bucket == "":
		return s.serviceOp(w, req)
	case key == "":
		return s.bucketOp(w, req)
	default:
		return s.objectOp(w, req)
	}
}

func (s *Server) serviceOp(w http.ResponseWriter, req *request) *apiError {
	if req.Method != http.MethodGet {
		return methodNotAllowed(req, "SERVICE")
	}
	if p := req.unknownParam("prefix", "max-buckets", "continuation-token", "bucket-region"); p != "" {
		return notImplemented(p)
	}
	return s.listBuckets(w, req)
}

func (s *Server) bucketOp(w http.ResponseWriter, req *request) *apiError {
	switch req.Method {
	case http.MethodPut:
		if p := req.unknownParam(); p != "" {
			return notImplemented(p)
		}
		return s.createBucket(w, req)
	case http.MethodHead:
		return s.headBucket(w, req)
	case http.MethodDelete:
		if p := req.unknownParam(); p != "" {
			return notImplemented(p)
		}
		return s.deleteBucket(w, req)
	case http.MethodGet:
		switch {
		case req.query.Has("versioning"):
			return s.getBucketVersioning(w, req)
		case req.query.Has("location"):
			return s.getBucketLocation(w, req)
		case req.query.Has("list-type"):
			if req.query.Get("list-type") != "2" {
				return errInvalidArgument.withMessage("Invalid List Type specified").with("ArgumentName", "list-type")
			}
			if p := req.unknownParam("list-type", "prefix", "delimiter", "max-keys", "continuation-token", "start-after", "encoding-type", "fetch-owner"); p != "" {
				return notImplemented(p)
			}
			return s.listObjects(w, req, 2)
		}
		if p := req.unknownParam("prefix", "delimiter", "max-keys", "marker", "encoding-type"); p != "" {
			return notImplemented(p)
		}
		return s.listObjects(w, req, 1)
	case http.MethodPost:
		if p := req.unknownParam(); p != "" {
			return notImplemented(p)
		}
	}
	return methodNotAllowed(req, "BUCKET")
}

func (s *Server) objectOp(w http.ResponseWriter, req *request) *apiError {
	if err := validKey(req.key); err != nil {
		return err
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		if req.Method == http.MethodGet && req.query.Has("attributes") {
			if p := req.unknownParam("attributes", "versionId"); p != "" {
				return notImplemented(p)
			}
			return s.getObjectAttributes(w, req)
		}
		if p := req.unknownParam(append([]string{"versionId", "partNumber"}, overrideParams...)...); p != "" {
			return notImplemented(p)
		}
		return s.getObject(w, req)
	case http.MethodPut:
		if req.Header.Get("x-amz-copy-source") != "" {
			return notImplemented("x-amz-copy-source")
		}
		if req.query.Has("uploadId") || req.query.Has("partNumber") {
			if p := req.unknownParam("uploadId", "partNumber"); p != "" {
				return notImplemented(p)
			}
			return s.uploadPart(w, req)
		}
		if p := req.unknownParam(); p != "" {
			return notImplemented(p)
		}
		return s.putObject(w, req)
	case http.MethodDelete:
		if req.query.Has("uploadId") {
			if p := req.unknownParam("uploadId"); p != "" {
				return notImplemented(p)
			}
			return s.abortMultipartUpload(w, req)
		}
		if p := req.unknownParam("versionId"); p != "" {
			return notImplemented(p)
		}
		return s.deleteObject(w, req)
	case http.MethodPost:
		switch {
		case req.query.Has("uploads"):
			if p := req.unknownParam("uploads"); p != "" {
				return notImplemented(p)
			}
			return s.createMultipartUpload(w, req)
		case req.query.Has("uploadId"):
			if p := req.unknownParam("uploadId"); p != "" {
				return notImplemented(p)
			}
			return s.completeMultipartUpload(w, req)
		}
		if p := req.unknownParam(); p != "" {
			return notImplemented(p)
		}
	}
	return methodNotAllowed(req, "OBJECT")
}

// unknownParam returns the first query parameter that is neither in allowed
// nor harmless everywhere: such parameters select S3 features (subresources
// like ?acl or ?tagging) that this server does not implement, and ignoring
// them would silently do the wrong thing.
func (req *request) unknownParam(allowed ...string) string {
	for k := range req.query {
		if k == "x-id" || strings.HasPrefix(strings.ToLower(k), "x-amz-") || slices.Contains(allowed, k) {
			continue // x-id names the operation (the SDK adds it); X-Amz-* is presigning
		}
		return k
	}
	return ""
}

func notImplemented(what string) *apiError {
	return errNotImplemented.with("Header", what)
}

func methodNotAllowed(req *request, resourceType string) *apiError {
	return errMethodNotAllowed.with("Method", req.Method).with("ResourceType", resourceType)
}

// validKey applies S3's limits on object keys.
func validKey(key string) *apiError {
	switch {
	case key == "":
		return errInvalidArgument.withMessage("The object key must not be empty.")
	case len(key) > 1024:
		return errKeyTooLong.with("MaxSizeAllowed", "1024").with("Size", strconv.Itoa(len(key)))
	}
	return nil
}

// writeXML sends a 200 response with an XML document.
func writeXML(w http.ResponseWriter, v any) *apiError {
	out, err := xml.Marshal(v)
	if err != nil {
		return errInternal
	}
	body := append([]byte(xml.Header), out...)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

// readXML decodes a small XML request body into v. It reports false, and
// leaves v alone, when the body is empty.
func readXML(req *request, v any) (bool, *apiError) {
	p, err := openPayload(req.Request, req.auth)
	if err != nil {
		return false, err
	}
	const limit = 1 << 20
	switch {
	case p.length == 0:
		return false, nil
	case p.length > limit:
		return false, errMalformedXML.withMessage("The XML you provided was too large.")
	}
	if derr := xml.NewDecoder(p).Decode(v); derr != nil {
		var aerr *apiError
		if errors.As(derr, &aerr) {
			return false, aerr
		}
		return false, errMalformedXML
	}
	// Read to the end so that the body hash or chunk signatures get checked
	// even where the decoder stopped early.
	if _, err := io.Copy(io.Discard, p); err != nil {
		return false, bodyError(err)
	}
	return true, nil
}

// bodyError maps a failure reading a request body to the S3 error.
func bodyError(err error) *apiError {
	var aerr *apiError
	if errors.As(err, &aerr) {
		return aerr
	}
	// Truncated bodies and broken connections; if the client has gone away
	// nobody reads the answer anyway.
	return errIncompleteBody
}
