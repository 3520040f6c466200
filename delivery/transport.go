package delivery

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/internal/traceparent"
)

// newHTTPClient returns the client every delivery request goes through, targets' and plugins'
// own: keepIdleConns → otelhttp (one client span per attempt, which also injects its
// traceparent) → spanTransport (webhook.* attributes) → policyTransport (require_https,
// allowed_hosts) → http.Transport, whose dialer holds every address to the SSRF rules. It
// also returns the http.Transport, whose idle connections the engine closes when it stops.
func newHTTPClient(sec config.Security, timeout time.Duration, tp trace.TracerProvider) (*http.Client, *http.Transport) {
	dialer := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		// The SSRF guard: every address a delivery connects to, as resolved (so a name that
		// resolves to a private address, now or after a DNS change, is caught here).
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			addr, err := netip.ParseAddr(host)
			if err != nil {
				return fmt.Errorf("dial %q: %w", address, err)
			}
			return sec.CheckAddr(addr)
		},
	}
	base := &http.Transport{
		Proxy:                 nil, // an environment proxy must not carry deliveries past the dial-time rules
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	return &http.Client{
		Transport: keepIdleConns{otelhttp.NewTransport(spanTransport{policyTransport{sec: sec, rt: base}},
			otelhttp.WithTracerProvider(tp),
			otelhttp.WithPropagators(traceparent.Propagator),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
		)},
		Timeout: timeout,
		// Redirects are never followed: a 3xx is the attempt's answer, and a failure.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, base
}

// keepIdleConns hides CloseIdleConnections: retryablehttp calls it on the shared client
// whenever a delivery gives up, which would drop every subscriber's keep-alive connections
// for one subscriber's failure.
type keepIdleConns struct{ rt http.RoundTripper }

func (k keepIdleConns) RoundTrip(req *http.Request) (*http.Response, error) {
	return k.rt.RoundTrip(req)
}

// policyTransport holds every request the delivery client makes (to targets, and plugins'
// own) to security.require_https and allowed_hosts; the dialer holds them to the address rules.
type policyTransport struct {
	rt  http.RoundTripper
	sec config.Security
}

func (t policyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && t.sec.RequireHTTPS {
		return nil, &config.BlockedError{Addr: req.URL.Host, Reason: "not reached over https:// (security.require_https)"}
	}
	if !t.sec.HostAllowed(req.URL.Hostname()) {
		return nil, &config.BlockedError{Addr: req.URL.Hostname(), Reason: "not in security.allowed_hosts"}
	}
	return t.rt.RoundTrip(req)
}

// spanTransport runs under otelhttp's, inside the request's client span. For every request,
// attempts and plugins' own (oauth2's token request) alike, it replaces otelhttp's url.full
// with one without credentials or query values. For an attempt it adds what otelhttp does not
// set (the webhook.* attributes, http.request.resend_count, error.type for a 3xx) and notes the
// trace id for the attempt log. Only the attempt request carries its round in the context; a
// plugin's own request does not, and is not an attempt. Its errors, and those of the response
// body, carry their documented error.type (see errorType), which otelhttp records in place of
// the Go type's name.
type spanTransport struct{ rt http.RoundTripper }

func (t spanTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	span := trace.SpanFromContext(req.Context())
	span.SetAttributes(attribute.String("url.full", redactedURL(req.URL)))
	if r := roundOf(req.Context()); r != nil {
		attempt := r.claim.Delivery.Attempts + len(r.attempts) + 1
		attrs := []attribute.KeyValue{
			attribute.String("webhook.event.id", r.claim.Event.ID),
			attribute.String("webhook.event.type", r.claim.Event.Type),
			attribute.String("webhook.subscription.id", r.claim.Delivery.SubscriptionID),
			attribute.String("webhook.delivery.id", r.claim.Delivery.ID),
			attribute.Int("webhook.attempt", attempt),
		}
		if attempt > 1 {
			attrs = append(attrs, attribute.Int("http.request.resend_count", attempt-1))
		}
		span.SetAttributes(attrs...)
		if sc := span.SpanContext(); sc.HasTraceID() {
			r.traceID = sc.TraceID().String()
		}
	}
	deadline, _ := req.Context().Deadline() // delivery.timeout's, set by the client
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		return nil, &typedError{err, deadline}
	}
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		span.SetAttributes(attribute.String("error.type", strconv.Itoa(resp.StatusCode)))
		span.SetStatus(codes.Error, "redirects are not followed")
	}
	resp.Body = typedBody{resp.Body, deadline}
	return resp, nil
}

// typedError is an error of a delivery request that says its error.type: OpenTelemetry's
// semconv.ErrorType, which otelhttp uses, takes it from ErrorType. It is otherwise its
// underlying error (errors.Is and As, Timeout).
type typedError struct {
	err      error
	deadline time.Time // the request's, if any
}

func (e *typedError) Error() string { return e.err.Error() }
func (e *typedError) Unwrap() error { return e.err }

// ErrorType is errorType's, but timeout when the request's deadline has passed: the client
// cancels a request that runs out of time in two ways at once, and the transport may report
// either, as "net/http: request canceled" as well as a deadline error.
func (e *typedError) ErrorType() string {
	typ := errorType(e.err)
	if (typ == "_OTHER" || typ == "cancelled") && !e.deadline.IsZero() && !time.Now().Before(e.deadline) {
		return "timeout"
	}
	return typ
}

// Timeout and Temporary keep what net/http and url.Error ask of a transport's error.
func (e *typedError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

func (e *typedError) Temporary() bool {
	var t interface{ Temporary() bool }
	return errors.As(e.err, &t) && t.Temporary()
}

// typedBody is a response body whose read errors (a reset, a timeout while the answer comes)
// say their error.type too. io.EOF is returned as it is.
type typedBody struct {
	io.ReadCloser
	deadline time.Time
}

func (b typedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = &typedError{err, b.deadline}
	}
	return n, err
}

// redactedURL is u without credentials and with every query value replaced: a query may hold
// a secret.
func redactedURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}
