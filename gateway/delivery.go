package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/plugins/basicauth"
	"github.com/webhookgw/gateway/store"
)

// maxChains bounds the deliverer's cache of subscriptions' plugins.
const maxChains = 10000

// responseBodyLimit is how much of a response body an attempt keeps.
const responseBodyLimit = 1024

// deliverer makes the HTTP attempts of deliveries through one retryablehttp client: its
// in-process retries are delivery.quick_retries, and every attempt is recorded.
type deliverer struct {
	client    *retryablehttp.Client
	cfg       config.Delivery
	plugins   *plugins.Registry
	now       func() time.Time
	userAgent string

	mu     sync.Mutex
	chains map[string]pluginChain // by subscription id
}

// pluginChain is a subscription's plugins, made once per version of the subscription.
type pluginChain struct {
	updated time.Time
	plugins []plugins.Plugin
	err     error
}

// quiet hides CloseIdleConnections: retryablehttp calls it on the shared client whenever a
// delivery gives up, which would drop every subscriber's keep-alive connections for one
// subscriber's failure.
type quiet struct{ rt http.RoundTripper }

func (q quiet) RoundTrip(req *http.Request) (*http.Response, error) { return q.rt.RoundTrip(req) }

// transport holds every request the delivery client makes (to targets, and plugins' own) to
// security.require_https and allowed_hosts; the dialer holds them to the address rules.
type transport struct {
	rt  http.RoundTripper
	sec config.Security
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && t.sec.RequireHTTPS {
		return nil, &config.BlockedError{Addr: req.URL.Host, Reason: "not reached over https:// (security.require_https)"}
	}
	if !t.sec.HostAllowed(req.URL.Hostname()) {
		return nil, &config.BlockedError{Addr: req.URL.Hostname(), Reason: "not in security.allowed_hosts"}
	}
	return t.rt.RoundTrip(req)
}

// newDeliverer returns a deliverer; quickWait is the first quick-retry wait (doubled each
// retry, at most 8 times it).
func newDeliverer(cfg config.Delivery, sec config.Security, reg *plugins.Registry, now func() time.Time, quickWait time.Duration, tp trace.TracerProvider) *deliverer {
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
	d := &deliverer{
		cfg:       cfg,
		plugins:   reg,
		now:       now,
		userAgent: "webhook-gateway/" + Version,
		chains:    make(map[string]pluginChain),
	}
	d.client = &retryablehttp.Client{
		HTTPClient: &http.Client{
			// One client span per attempt (otelhttp, which also injects its traceparent), even
			// for an attempt the rules refuse before it is sent.
			Transport: quiet{otelhttp.NewTransport(spanTransport{transport{sec: sec, rt: base}},
				otelhttp.WithTracerProvider(tp),
				otelhttp.WithPropagators(propagator),
				otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
			)},
			Timeout: cfg.Timeout,
			// Redirects are never followed: a 3xx is the attempt's answer, and a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Logger:       nil,
		RetryWaitMin: quickWait,
		RetryWaitMax: 8 * quickWait,
		RetryMax:     cfg.QuickRetries,
		CheckRetry:   d.checkRetry,
		Backoff:      quickBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		PrepareRetry: d.prepare, // re-signs: plugins run again with the new timestamp
	}
	return d
}

// round is one claimed delivery's attempts, carried in the request's context to the client's
// hooks.
type round struct {
	claim    *store.Claim
	chain    []plugins.Plugin
	body     []byte
	start    time.Time
	started  time.Time // monotonic, for durations
	attempts []store.Attempt
	// retryAfter is the last 429/503 answer's Retry-After, for the durable retry.
	retryAfter time.Duration
	// traceID is the trace of the attempt under way, set by spanTransport.
	traceID string
}

type roundKey struct{}

// deliver makes a round of attempts at a claim and returns its outcome. It returns nil when
// ctx ended first (a shutdown): the claim is then released rather than counted as a failure.
func (d *deliverer) deliver(ctx context.Context, claim *store.Claim) *store.Outcome {
	sub := claim.Subscription
	r := &round{claim: claim, body: claim.Event.Payload}
	o := &store.Outcome{DeliveryID: claim.Delivery.ID, SubscriptionID: sub.ID}
	chain, err := d.chain(sub)
	if err != nil {
		// A stored plugin config that no longer loads: an attempt would go out without it.
		o.Attempts = []store.Attempt{{At: d.now().UTC(), Error: "plugin: " + err.Error()}}
		o.Reason = "plugin configuration: " + err.Error()
		o.NextAttemptAt = d.nextAttempt(claim.Delivery.Step, 0)
		return o
	}
	r.chain = chain
	// Plugins that make requests of their own (oauth2) get the delivery client: same rules.
	// The attempts' spans join the trace the event came with.
	ctx = withTraceParent(ctx, claim.Event.TraceParent)
	ctx = plugins.WithClient(context.WithValue(ctx, roundKey{}, r), d.client.HTTPClient)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, sub.URL, r.body)
	if err != nil {
		o.Attempts = []store.Attempt{{At: d.now().UTC(), Error: "bad target URL: " + err.Error()}}
		o.Reason = "bad target URL"
		return o // not retried: the URL will not get better
	}
	if err := d.prepare(req.Request); err != nil {
		o.Attempts = []store.Attempt{{At: d.now().UTC(), Error: err.Error()}}
		o.Reason = err.Error()
		o.NextAttemptAt = d.nextAttempt(claim.Delivery.Step, 0)
		return o
	}
	resp, err := d.client.Do(req)
	if resp != nil {
		resp.Body.Close()
	}
	if ctx.Err() != nil {
		return nil
	}
	if len(r.attempts) == 0 { // PrepareRetry failed before anything was sent
		r.attempts = append(r.attempts, store.Attempt{At: d.now().UTC(), Error: errorText(err)})
	}
	o.Attempts = r.attempts
	last := r.attempts[len(r.attempts)-1]
	switch {
	case last.StatusCode >= 200 && last.StatusCode <= 299:
		o.Succeeded = true
	case last.StatusCode == http.StatusGone:
		o.Gone, o.Reason = true, "HTTP 410 from target: the subscription is deactivated"
	default:
		o.Reason = failureReason(last)
		o.NextAttemptAt = d.nextAttempt(claim.Delivery.Step, r.retryAfter)
	}
	return o
}

// prepare sets what changes per attempt: the headers, then the plugins in order.
func (d *deliverer) prepare(req *http.Request) error {
	r := req.Context().Value(roundKey{}).(*round)
	sub := r.claim.Subscription
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", d.userAgent)
	h.Set("Webhook-Id", r.claim.Delivery.ID)
	r.start, r.started = d.now().UTC(), time.Now()
	h.Set("Webhook-Timestamp", strconv.FormatInt(r.start.Unix(), 10))
	for name, value := range sub.Headers {
		h.Set(name, value)
	}
	for i, p := range r.chain {
		if err := p.Apply(req.Context(), req, r.body); err != nil {
			return fmt.Errorf("plugin %d: %w", i, err)
		}
	}
	return nil
}

// checkRetry records the attempt that just ended and says whether to retry it in process:
// network errors and non-2xx answers are retried, except 410 Gone, and a 429 or 503 whose
// Retry-After asks for longer than a quick retry waits (that becomes the durable retry).
func (d *deliverer) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	r, _ := ctx.Value(roundKey{}).(*round)
	if r == nil {
		return false, err
	}
	a := store.Attempt{At: r.start, Duration: time.Since(r.started), TraceID: r.traceID}
	if err != nil {
		a.Error = errorText(err)
	} else {
		a.StatusCode = resp.StatusCode
		a.ResponseBody, _ = io.ReadAll(io.LimitReader(resp.Body, responseBodyLimit))
		if len(a.ResponseBody) == 0 {
			a.ResponseBody = nil
		}
		for _, p := range r.chain {
			if o, ok := p.(plugins.ResponseObserver); ok {
				o.Observe(resp.Request, resp)
			}
		}
	}
	r.attempts = append(r.attempts, a)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	var blocked *config.BlockedError
	if errors.As(err, &blocked) {
		return false, nil // the address will not change in a second
	}
	if err != nil {
		return true, nil
	}
	code := resp.StatusCode
	r.retryAfter = 0
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		if wait, ok := retryAfter(resp.Header.Get("Retry-After"), d.now()); ok {
			r.retryAfter = wait
			if wait > d.client.RetryWaitMax {
				return false, nil
			}
		}
	}
	switch {
	case code >= 200 && code <= 299, code == http.StatusGone:
		return false, nil
	}
	return true, nil
}

// quickBackoff waits min·2ⁿ (at most max) between quick retries, or what a 429 or 503 asked
// for in Retry-After (checkRetry has already made sure that is at most max).
func quickBackoff(min, max time.Duration, n int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if wait, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && wait <= max {
			return wait
		}
	}
	wait := min << n
	if wait > max || wait <= 0 {
		wait = max
	}
	return wait
}

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

// nextAttempt returns when the durable retry after the step-th is due, with jitter, or nil when
// the schedule is exhausted. A Retry-After is honoured, up to twice the scheduled wait.
func (d *deliverer) nextAttempt(step int, retryAfter time.Duration) *time.Time {
	if step >= len(d.cfg.Schedule) {
		return nil
	}
	scheduled := d.cfg.Schedule[step]
	wait := time.Duration(float64(scheduled) * (1 + d.cfg.Jitter*(2*rand.Float64()-1)))
	if retryAfter > wait {
		wait = min(retryAfter, 2*scheduled)
	}
	at := d.now().UTC().Add(wait)
	return &at
}

// chain returns the plugins of sub, made from its stored configs once per version. A
// registration's user name and password come first, as a basic-auth plugin.
func (d *deliverer) chain(sub *store.Subscription) ([]plugins.Plugin, error) {
	d.mu.Lock()
	c, ok := d.chains[sub.ID]
	d.mu.Unlock()
	if ok && c.updated.Equal(sub.UpdatedAt) {
		return c.plugins, c.err
	}
	c = pluginChain{updated: sub.UpdatedAt}
	if sub.Username != "" {
		p, err := basicauth.New(basicauth.Config{Username: sub.Username, Password: sub.Password})
		if err != nil {
			c.err = err
		} else {
			c.plugins = append(c.plugins, p)
		}
	}
	for _, spec := range sub.Plugins {
		if c.err != nil {
			break
		}
		node, err := textNode(spec.Config)
		if err == nil {
			var p plugins.Plugin
			p, err = d.plugins.New(spec.Name, node)
			c.plugins = append(c.plugins, p)
		}
		if err != nil {
			c.err = fmt.Errorf("%s: %w", spec.Name, err)
		}
	}
	d.mu.Lock()
	if len(d.chains) >= maxChains {
		// Deleted subscriptions' entries (and the secrets in them) go too; the rest are
		// made again as their deliveries come.
		clear(d.chains)
	}
	d.chains[sub.ID] = c
	d.mu.Unlock()
	return c.plugins, c.err
}

// spanTransport runs under otelhttp's, inside the attempt's client span: it adds what otelhttp
// does not set (the webhook.* attributes, http.request.resend_count, error.type for a 3xx) and
// a url.full without query values, and notes the trace id for the attempt log.
type spanTransport struct{ rt http.RoundTripper }

func (t spanTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	span := trace.SpanFromContext(req.Context())
	// Only the delivery request itself: a plugin's own (oauth2's token request) shares the
	// round's context but is not an attempt.
	if r, ok := req.Context().Value(roundKey{}).(*round); ok && r != nil && req.Header.Get("Webhook-Id") == r.claim.Delivery.ID {
		attempt := r.claim.Delivery.Attempts + len(r.attempts) + 1
		attrs := []attribute.KeyValue{
			attribute.String("url.full", redactedURL(req.URL)),
			attribute.String("webhook.event.id", r.claim.Event.ID),
			attribute.String("webhook.event.type", r.claim.Event.Type),
			attribute.String("webhook.subscription.id", r.claim.Subscription.ID),
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
	resp, err := t.rt.RoundTrip(req)
	switch {
	case err != nil: // otelhttp records error.type (config.BlockedError says "blocked")
	case resp.StatusCode >= 300 && resp.StatusCode <= 399:
		span.SetAttributes(attribute.String("error.type", strconv.Itoa(resp.StatusCode)))
		span.SetStatus(codes.Error, "redirects are not followed")
	}
	return resp, err
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
