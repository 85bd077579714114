package fetch

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestCredentialsErrorClass(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	cases := []struct {
		name     string
		err      *credentialsError
		access   bool
		mentions string
	}{
		{"nothing configured, no instance role", &credentialsError{err: errors.New("no EC2 IMDS role found"), instanceRoleOnly: true}, true, "AWS_ACCESS_KEY_ID"},
		{"a profile's credentials refused", &credentialsError{err: errors.New("SSO session has expired")}, true, "getting AWS credentials: SSO session"},
		// An unreachable metadata or STS endpoint is an outage: mounts with
		// a saved listing keep serving their cached blocks.
		{"metadata endpoint unreachable", &credentialsError{err: refused, instanceRoleOnly: true}, false, "no AWS credentials found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(tc.err, ErrAccess); got != tc.access {
				t.Errorf("errors.Is(err, ErrAccess) = %v, want %v", got, tc.access)
			}
			if !strings.Contains(tc.err.Error(), tc.mentions) {
				t.Errorf("%q does not mention %q", tc.err.Error(), tc.mentions)
			}
		})
	}
}
