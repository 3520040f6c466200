package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// retryAfter parses a Retry-After value: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, 7*24*3600)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// quickBackoff waits first·2ⁿ (at most most) between quick retries, or what a 429 or 503
// asked for in Retry-After, which checkRetry has already read into the round (and made sure is
// at most most).
func quickBackoff(first, most time.Duration, n int, resp *http.Response) time.Duration {
	if resp != nil && resp.Request != nil {
		if r := roundOf(resp.Request.Context()); r != nil && r.retryAfter > 0 && r.retryAfter <= most {
			return r.retryAfter
		}
	}
	wait := first << n
	if wait > most || wait <= 0 {
		wait = most
	}
	return wait
}

// schedule turns a failed round into the next durable retry.
type schedule struct {
	waits  []time.Duration
	jitter float64
	now    func() time.Time
}

// next returns when the durable retry after the step-th is due, with jitter, or nil when the
// schedule is exhausted. A Retry-After is honoured, up to twice the scheduled wait.
func (s schedule) next(step int, retryAfter time.Duration) *time.Time {
	if step >= len(s.waits) {
		return nil
	}
	scheduled := s.waits[step]
	wait := time.Duration(float64(scheduled) * (1 + s.jitter*(2*rand.Float64()-1)))
	if retryAfter > wait {
		wait = min(retryAfter, 2*scheduled)
	}
	at := s.now().UTC().Add(wait)
	return &at
}

// errorText says what went wrong with an attempt that got no answer, without the URL (whose
// query may hold a secret).
func errorText(err error) string {
	if err == nil {
		return "no response"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var blocked *config.BlockedError
	if errors.As(err, &blocked) {
		return blocked.Error()
	}
	var netErr net.Error
	var tlsErr *tls.CertificateVerificationError
	var recordErr tls.RecordHeaderError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout: no answer in time"
	case errors.Is(err, context.Canceled):
		return "cancelled: the gateway was shutting down"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection reset"
	case errors.As(err, &dnsErr):
		return "DNS: " + dnsErr.Err + " (" + dnsErr.Name + ")"
	case errors.As(err, &tlsErr), errors.As(err, &recordErr):
		return "TLS: " + err.Error()
	}
	return err.Error()
}

// errorType is the error.type of a request that got no answer, one of a few values (the
// OpenTelemetry conventions ask for low cardinality, and Go type names say little): blocked
// (the security rules refused the address), dns, tls, timeout, connection_refused,
// connection_reset, cancelled (the gateway was shutting down), or _OTHER. An answer's
// error.type is its status code.
func errorType(err error) string {
	var blocked *config.BlockedError
	var dnsErr *net.DNSError
	var netErr net.Error
	var (
		tlsVerify   *tls.CertificateVerificationError
		tlsRecord   tls.RecordHeaderError
		tlsAlert    tls.AlertError
		x509Unknown x509.UnknownAuthorityError
		x509Host    x509.HostnameError
		x509Invalid x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &blocked):
		return "blocked"
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.As(err, &tlsVerify), errors.As(err, &tlsRecord), errors.As(err, &tlsAlert),
		errors.As(err, &x509Unknown), errors.As(err, &x509Host), errors.As(err, &x509Invalid):
		return "tls"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection_reset"
	}
	return "_OTHER"
}

// failureReason is the error state reason of a failed attempt.
func failureReason(a store.Attempt) string {
	switch {
	case a.StatusCode >= 300 && a.StatusCode <= 399:
		return fmt.Sprintf("HTTP %d from target (redirects are not followed)", a.StatusCode)
	case a.StatusCode != 0:
		return fmt.Sprintf("HTTP %d from target", a.StatusCode)
	}
	return a.Error
}

// succeeded reports whether an attempt got a 2xx.
func succeeded(a store.Attempt) bool { return a.StatusCode >= 200 && a.StatusCode <= 299 }
