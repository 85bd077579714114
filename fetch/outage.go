package fetch

import (
	"errors"
	"net"
	"strings"

	"github.com/aws/smithy-go"
)

// Unreachable reports whether err means the source could not be reached:
// connection refused or reset, a name that does not resolve, timeouts, or
// server errors that outlasted the retries. Those are outages; anything
// else is an answer (refused credentials, a missing bucket, a bad request)
// that a saved listing must not paper over.
//
// Credentials that could not be found are never an outage, even when
// looking for them failed on the network (an instance metadata service,
// STS): a mount that has not shown it may read the source must not serve
// what other mounts cached from it.
func Unreachable(err error) bool {
	if err == nil || errors.Is(err, ErrAccess) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrChanged) {
		return false
	}
	if credentialsFailed(err) {
		return false
	}
	if isTransient(err) {
		return true
	}
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns)
}

// credentialsFailed reports whether err came from resolving credentials
// rather than from the request itself. The AWS SDK types no such error:
// a nested operation error (the metadata service's or STS's inside the
// S3 call's) or its "get identity" step is what marks it.
func credentialsFailed(err error) bool {
	var credErr *credentialsError
	var gcsErr *gcsCredentialsError
	if errors.As(err, &credErr) || errors.As(err, &gcsErr) {
		return true
	}
	var outer *smithy.OperationError
	if errors.As(err, &outer) {
		var inner *smithy.OperationError
		if errors.As(outer.Err, &inner) {
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "get identity:") || strings.Contains(msg, "get credentials:")
}
