package fetch

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/aws/smithy-go"
)

func TestUnreachableOnlyForOutages(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	imds := &smithy.OperationError{ServiceID: "ec2imds", OperationName: "GetMetadata", Err: refused}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", fmt.Errorf("list: giving up after 6 attempts: %w", refused), true},
		{"DNS", &net.DNSError{Err: "no such host", Name: "store"}, true},
		{"5xx after retries", fmt.Errorf("list: giving up: %w", transient(errors.New("HTTP 503"), 0)), true},
		{"HTTP 401/403", statusError(401, ""), false},
		{"HTTP 403", statusError(403, ""), false},
		{"access denied", fmt.Errorf("%w: s3://b: check credentials", ErrAccess), false},
		{"not found", ErrNotFound, false},
		{"unknown answer", errors.New("HTTP 400"), false},
		{"credentials from an unreachable metadata service", &smithy.OperationError{ServiceID: "S3", OperationName: "ListObjectsV2",
			Err: fmt.Errorf("get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found, %w", imds)}, false},
		{"no credentials", &smithy.OperationError{ServiceID: "S3", OperationName: "ListObjectsV2",
			Err: fmt.Errorf("get identity: get credentials: %w", errors.New("no EC2 IMDS role found"))}, false},
	} {
		if got := Unreachable(c.err); got != c.want {
			t.Errorf("%s: Unreachable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
