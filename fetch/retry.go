package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
)

// RetryOptions bound how hard a Source tries before an error surfaces.
type RetryOptions struct {
	// MaxAttempts is the number of tries per request, first one included.
	MaxAttempts int
	// BaseDelay is the backoff before the second try; it doubles each time.
	BaseDelay time.Duration
	// MaxDelay caps one backoff.
	MaxDelay time.Duration
	// AttemptTimeout bounds one try, body included, so a stalled
	// connection is abandoned and retried.
	AttemptTimeout time.Duration
	// Observer, when set, is told about every request and retry.
	Observer Observer
}

// DefaultRetry is 6 tries over about 10 s of backoff, 60 s per try.
func DefaultRetry() RetryOptions {
	return RetryOptions{MaxAttempts: 6, BaseDelay: 200 * time.Millisecond, MaxDelay: 5 * time.Second, AttemptTimeout: 60 * time.Second}
}

func (r RetryOptions) withDefaults() RetryOptions {
	d := DefaultRetry()
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = d.MaxAttempts
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = d.BaseDelay
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = d.MaxDelay
	}
	if r.AttemptTimeout <= 0 {
		r.AttemptTimeout = d.AttemptTimeout
	}
	return r
}

// retryableError marks an error worth another try. retryAfter, when set, is
// the server's requested delay (Retry-After).
type retryableError struct {
	err        error
	retryAfter time.Duration
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// transient wraps err so that do retries it.
func transient(err error, retryAfter time.Duration) error {
	return &retryableError{err: err, retryAfter: retryAfter}
}

// isTransient reports whether err is worth retrying: marked transient,
// a timeout, a reset or refused connection, or a short body.
func isTransient(err error) bool {
	var re *retryableError
	if errors.As(err, &re) {
		return true
	}
	if errors.Is(err, ErrChanged) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAccess) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// do runs fn until it succeeds, fails for good, or the budget is spent.
// Each try gets its own deadline of AttemptTimeout. op is the kind of
// request (OpGet...) and bytes what it returns on success, both for the
// Observer; what names the request in the final error.
func (r RetryOptions) do(ctx context.Context, op string, bytes int64, what string, fn func(ctx context.Context) error) error {
	if r.Observer == nil {
		return r.try(ctx, op, what, fn)
	}
	start := time.Now()
	err := r.try(ctx, op, what, fn)
	if err != nil {
		bytes = 0
	}
	r.Observer.Request(op, bytes, time.Since(start), err)
	return err
}

// try is do's retry loop.
func (r RetryOptions) try(ctx context.Context, op, what string, fn func(ctx context.Context) error) error {
	r = r.withDefaults()
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, r.AttemptTimeout)
		err = fn(actx)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		if !timedOut && !isTransient(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if attempt >= r.MaxAttempts {
			return fmt.Errorf("%s: giving up after %d attempts: %w", what, attempt, err)
		}
		if r.Observer != nil {
			r.Observer.Retry(op)
		}
		delay := r.backoff(attempt)
		var re *retryableError
		if errors.As(err, &re) && re.retryAfter > delay {
			delay = min(re.retryAfter, r.MaxDelay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// backoff is "full jitter" exponential backoff: uniform in [d/2, d] where d
// doubles per attempt up to MaxDelay, so many clients do not retry in step.
func (r RetryOptions) backoff(attempt int) time.Duration {
	d := r.BaseDelay << min(attempt-1, 20)
	if d > r.MaxDelay || d <= 0 {
		d = r.MaxDelay
	}
	return d/2 + rand.N(d/2+1)
}

// statusError turns a non-success HTTP status into the error a Source
// returns: the package's sentinel errors where one fits, transient for
// throttling and server errors (honouring Retry-After in seconds).
func statusError(status int, retryAfter string) error {
	base := fmt.Errorf("HTTP %d", status)
	switch {
	case status == 404:
		return fmt.Errorf("%w (%w)", ErrNotFound, base)
	case status == 401 || status == 403:
		return fmt.Errorf("%w (%w)", ErrAccess, base)
	case status == 412 || status == 416:
		return fmt.Errorf("%w (%w)", ErrChanged, base)
	case status == 429 || status >= 500:
		var after time.Duration
		if secs, err := time.ParseDuration(retryAfter + "s"); err == nil && secs > 0 {
			after = secs
		}
		return transient(base, after)
	default:
		return base
	}
}
