package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/webhookgw/gateway/config"
)

// The error types that are awkward to cause for real (the attempt spans' test causes the
// others), wrapped as the client wraps them; semconv.ErrorType, which otelhttp uses, takes
// typedError's.
func TestErrorType(t *testing.T) {
	wrap := func(err error) error {
		return &url.Error{Op: "Post", URL: "https://example.com/", Err: fmt.Errorf("attempt: %w", err)}
	}
	for err, want := range map[error]string{
		&net.DNSError{Err: "no such host", Name: "hooks.example.invalid", IsNotFound: true}: "dns",
		&net.DNSError{Err: "i/o timeout", Name: "hooks.example.com", IsTimeout: true}:       "dns",
		&config.BlockedError{Addr: "127.0.0.1", Reason: "a loopback address"}:               "blocked",
		context.Canceled:                               "cancelled",
		context.DeadlineExceeded:                       "timeout",
		errors.New("something else"):                   "_OTHER",
		&net.OpError{Op: "read", Err: errors.New("x")}: "_OTHER",
	} {
		if got := errorType(wrap(err)); got != want {
			t.Errorf("%v: %q, want %q", err, got, want)
		}
		if got := semconv.ErrorType(wrap(&typedError{err: err})).Value.AsString(); got != want {
			t.Errorf("%v as otelhttp sees it: %q, want %q", err, got, want)
		}
	}
	// The client cancels a request that runs out of time; past its deadline, that is a timeout.
	canceled := errors.New("net/http: request canceled")
	if got := (&typedError{err: canceled, deadline: time.Now().Add(-time.Millisecond)}).ErrorType(); got != "timeout" {
		t.Errorf("canceled past the deadline: %q, want timeout", got)
	}
	if got := (&typedError{err: canceled, deadline: time.Now().Add(time.Hour)}).ErrorType(); got != "_OTHER" {
		t.Errorf("canceled before the deadline: %q, want _OTHER", got)
	}
	if got := (&typedError{err: syscallRefused(), deadline: time.Now().Add(-time.Millisecond)}).ErrorType(); got != "connection_refused" {
		t.Errorf("refused, found past the deadline: %q, want connection_refused", got)
	}
	// It stays the error it wraps, for http.Client's url.Error too.
	timeout := &typedError{err: &net.OpError{Op: "dial", Err: context.DeadlineExceeded}}
	var ne net.Error
	if ue := (&url.Error{Op: "Post", URL: "https://example.com/", Err: timeout}); !errors.As(ue, &ne) || !ne.Timeout() ||
		!errors.Is(ue, context.DeadlineExceeded) {
		t.Error("a typedError around a timeout is not a timeout")
	}
}

func syscallRefused() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}
