package s3server

import (
	"encoding/xml"
	"net/http"
	"strconv"
)

// apiError is an S3 error response. It doubles as a Go error so that helpers
// deep in a request (the body decoders, the store) can say exactly what S3
// would answer.
type apiError struct {
	Status  int
	Code    string
	Message string
	// extra holds the additional elements S3 puts in some error documents
	// (Key, BucketName, RangeRequested, StringToSign, ...), in order.
	extra []xmlField
}

type xmlField struct{ name, value string }

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// with returns a copy of e carrying an extra element; the predefined errors
// below are shared, so they are never modified in place.
func (e *apiError) with(name, value string) *apiError {
	c := *e
	c.extra = append(append([]xmlField(nil), e.extra...), xmlField{name, value})
	return &c
}

// withMessage returns a copy of e with a more specific message.
func (e *apiError) withMessage(msg string) *apiError {
	c := *e
	c.Message = msg
	return &c
}

func newError(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

// The errors this server produces, with the statuses and messages S3 uses.
var (
	errAccessDenied          = newError(http.StatusForbidden, "AccessDenied", "Access Denied")
	errAuthHeaderMalformed   = newError(http.StatusBadRequest, "AuthorizationHeaderMalformed", "The authorization header is malformed.")
	errAuthQueryMalformed    = newError(http.StatusBadRequest, "AuthorizationQueryParametersError", "Error parsing the X-Amz-Credential parameter.")
	errBadDigest             = newError(http.StatusBadRequest, "BadDigest", "The Content-MD5 you specified did not match what we received.")
	errBucketExists          = newError(http.StatusConflict, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.")
	errBucketNotEmpty        = newError(http.StatusConflict, "BucketNotEmpty", "The bucket you tried to delete is not empty")
	errEntityTooLarge        = newError(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
	errEntityTooSmall        = newError(http.StatusBadRequest, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.")
	errIllegalLocation       = newError(http.StatusBadRequest, "IllegalLocationConstraintException", "The specified location-constraint is not valid for this endpoint.")
	errIncompleteBody        = newError(http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
	errInternal              = newError(http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	errInvalidAccessKeyID    = newError(http.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
	errInvalidToken          = newError(http.StatusBadRequest, "InvalidToken", "The provided token is malformed or otherwise invalid.")
	errExpiredToken          = newError(http.StatusBadRequest, "ExpiredToken", "The provided token has expired.")
	errInvalidArgument       = newError(http.StatusBadRequest, "InvalidArgument", "Invalid Argument")
	errInvalidBucketName     = newError(http.StatusBadRequest, "InvalidBucketName", "The specified bucket is not valid.")
	errInvalidDigest         = newError(http.StatusBadRequest, "InvalidDigest", "The Content-MD5 you specified is not valid.")
	errInvalidPart           = newError(http.StatusBadRequest, "InvalidPart", "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
	errInvalidPartOrder      = newError(http.StatusBadRequest, "InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered by part number.")
	errInvalidPartNumber     = newError(http.StatusRequestedRangeNotSatisfiable, "InvalidPartNumber", "The requested partnumber is not satisfiable")
	errInvalidRange          = newError(http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
	errInvalidRequest        = newError(http.StatusBadRequest, "InvalidRequest", "Invalid Request")
	errKeyTooLong            = newError(http.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	errMalformedTrailer      = newError(http.StatusBadRequest, "MalformedTrailerError", "The request contained trailing data that was not well-formed or did not conform to our published schema.")
	errMalformedXML          = newError(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.")
	errMethodNotAllowed      = newError(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
	errMissingContentLength  = newError(http.StatusLengthRequired, "MissingContentLength", "You must provide the Content-Length HTTP header.")
	errMissingSecurityHeader = newError(http.StatusBadRequest, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
	errNoSuchBucket          = newError(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
	errNoSuchKey             = newError(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
	errNoSuchUpload          = newError(http.StatusNotFound, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
	errNoSuchVersion         = newError(http.StatusNotFound, "NoSuchVersion", "The specified version does not exist.")
	errNotImplemented        = newError(http.StatusNotImplemented, "NotImplemented", "A header or query you provided implies functionality that is not implemented.")
	errPreconditionFailed    = newError(http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
	errRequestExpired        = newError(http.StatusForbidden, "AccessDenied", "Request has expired")
	errRequestTimeTooSkewed  = newError(http.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
	errSignatureMismatch     = newError(http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
	errSHA256Mismatch        = newError(http.StatusBadRequest, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
)

// writeError sends e as S3 does: an XML document, except for HEAD requests,
// whose responses never carry a body (the SDK then only sees the status).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	h := w.Header()
	if r.Method == http.MethodHead {
		w.WriteHeader(e.Status)
		return
	}
	body := encodeError(e, r.URL.Path, h.Get("x-amz-request-id"), h.Get("x-amz-id-2"))
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

func encodeError(e *apiError, resource, requestID, hostID string) []byte {
	type field struct {
		XMLName xml.Name
		Value   string `xml:",chardata"`
	}
	doc := struct {
		XMLName xml.Name `xml:"Error"`
		Fields  []field
	}{}
	add := func(name, value string) {
		doc.Fields = append(doc.Fields, field{xml.Name{Local: name}, value})
	}
	add("Code", e.Code)
	add("Message", e.Message)
	for _, f := range e.extra {
		add(f.name, f.value)
	}
	add("Resource", resource)
	add("RequestId", requestID)
	add("HostId", hostID)
	out, err := xml.Marshal(doc)
	if err != nil { // cannot happen: only strings are marshalled
		panic(err)
	}
	return append([]byte(xml.Header), out...)
}
