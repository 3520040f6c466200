package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/time/rate"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/internal/traceparent"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/store"
)

// responseBodyLimit is how much of a response body an attempt keeps.
const responseBodyLimit = 1024

// Reasons a round stops before an attempt.
var (
	errSubscriptionDeleted  = errors.New("the subscription was deleted")
	errSubscriptionInactive = errors.New("the subscription is inactive")
	errShuttingDown         = errors.New("the gateway is shutting down")
)

// pluginError is a plugin's failure to prepare an attempt; the attempt counts as failed.
type pluginError struct{ err error }

func (e *pluginError) Error() string { return e.err.Error() }
func (e *pluginError) Unwrap() error { return e.err }

// round is one claimed delivery's attempts: the first, and quick retries in process. It is
// carried in the attempt request's context to the client's hooks (prepare, checkRetry,
// quickBackoff, spanTransport).
type round struct {
	e     *Engine
	lane  *lane
	claim *store.Claim
	// sub and chain are the subscription as of the attempt under way, and its plugins.
	sub   *store.Subscription
	chain []plugins.Plugin
	// slot says whether the round holds one of its lane's slots (an attempt in flight, or
	// about to start); retrying, whether the next prepare is a quick retry's. The engine's
	// mutex guards slot (which only the round's goroutine changes after it starts), token
	// and sent.
	slot, retrying bool
	// token is the claim's, or a newer one the engine took over for it; sent says the round
	// has sent its outcome (or release) with its token, which is final from then on.
	// recording is the outcome waiting to be recorded, which takes the token when it is.
	token     int64
	sent      bool
	recording *store.Outcome
	// outcome is the round's outcome once recorded and applied; released says its claim was
	// released instead, not attempted.
	outcome  *store.Outcome
	released bool
	// at is the attempt's start on the injected clock, monoStart on the monotonic one.
	at, monoStart time.Time
	attempts      []store.Attempt
	// retryAfter is the last 429/503 answer's Retry-After.
	retryAfter time.Duration
	// traceID is the trace of the attempt under way, set by spanTransport.
	traceID string
	// pluginHeaders are the headers the plugins set on the attempt under way: credentials,
	// redacted from the response body the attempt log keeps.
	pluginHeaders []string
}

type roundKey struct{}

// roundOf returns the round whose attempt request ctx belongs to, or nil.
func roundOf(ctx context.Context) *round {
	r, _ := ctx.Value(roundKey{}).(*round)
	return r
}

// run makes the round's attempts and returns its outcome; ok is false when no outcome is to
// be recorded (no attempt was made: the claim is released).
func (r *round) run(ctx context.Context) (o *store.Outcome, ok bool) {
	e, c := r.e, r.claim
	o = &store.Outcome{DeliveryID: c.Delivery.ID, SubscriptionID: c.Delivery.SubscriptionID, Token: c.Token}
	// The attempts' spans join the trace the event came with. Plugins that make requests of
	// their own (oauth2) get the delivery client: same rules; their requests are not attempts.
	ctx = traceparent.With(ctx, c.Event.TraceParent)
	ctx = plugins.WithClient(context.WithValue(ctx, roundKey{}, r), e.client.HTTPClient)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, "http://placeholder.invalid/", c.Event.Payload)
	if err != nil {
		o.Attempts = []store.Attempt{{At: e.now().UTC(), Error: "request: " + err.Error()}}
		o.Reason = o.Attempts[0].Error
		return o, true
	}
	var resp *http.Response
	if err = e.prepare(req.Request); err == nil {
		resp, err = e.client.Do(req)
		if resp != nil {
			resp.Body.Close()
		}
	}
	var pe *pluginError
	switch {
	case (ctx.Err() != nil || errors.Is(err, errShuttingDown)) && len(r.attempts) == 0:
		return nil, false // a shutdown before anything was sent: another run takes it from here
	case errors.Is(err, errSubscriptionDeleted):
		o.SubscriptionDeleted = true
	case errors.Is(err, errSubscriptionInactive) && len(r.attempts) == 0:
		return nil, false // paused with its subscription
	case errors.As(err, &pe):
		// A plugin failed before an attempt went out (first, or a quick retry's): that is
		// the attempt's failure, and its reason.
		r.attempts = append(r.attempts, store.Attempt{At: e.now().UTC(), Error: pe.Error()})
	case len(r.attempts) == 0:
		// Reading the subscription failed: nothing was sent; it is claimed again later.
		e.log.Error("delivery not attempted", "delivery_id", c.Delivery.ID, "err", err)
		return nil, false
	}
	o.Attempts = r.attempts
	if len(o.Attempts) == 0 {
		o.Reason = "subscription deleted"
		return o, true
	}
	last := o.Attempts[len(o.Attempts)-1]
	switch {
	case succeeded(last):
		o.Succeeded = true
	case last.StatusCode == http.StatusGone:
		o.Gone, o.Reason = true, "HTTP 410 from target: the subscription is deactivated"
	case o.SubscriptionDeleted:
		o.Reason = failureReason(last)
	case ctx.Err() != nil || errors.Is(err, errShuttingDown):
		// Cut short by a shutdown: due again as it was; the next run judges the target.
		o.Interrupted, o.Reason = true, failureReason(last)
		o.NextAttemptAt = c.Delivery.NextAttemptAt
	default:
		o.Reason = failureReason(last)
		o.NextAttemptAt = e.schedule.next(c.Delivery.Step, r.retryAfter)
	}
	return o, true
}

// prepare readies the attempt request for its attempt, the first and each quick retry's: it
// takes a slot again after a quick retry's wait, checks the subscription as it is now (a
// deleted or deactivated one is not sent to; a changed one is sent to as changed), waits for
// the subscription's rate limit, and sets the headers, then the plugins in order.
func (e *Engine) prepare(req *http.Request) error {
	ctx := req.Context()
	r := roundOf(ctx)
	r.retrying = true
	sub, err := e.currentSubscription(ctx, r.lane)
	switch {
	case err != nil:
		return err
	case sub == nil:
		return errSubscriptionDeleted
	case !sub.Active:
		return errSubscriptionInactive
	}
	if sub != r.sub || r.chain == nil { // read again: it may have changed
		chain, err := e.chains.get(sub, e.plugins) // the same plugins while their config stays
		if err != nil {
			return &pluginError{fmt.Errorf("plugin configuration: %w", err)}
		}
		if r.sub == nil || sub.URL != r.sub.URL {
			u, err := url.Parse(sub.URL)
			if err != nil {
				return &pluginError{fmt.Errorf("target URL: %w", err)}
			}
			req.URL, req.Host = u, ""
		}
		r.sub, r.chain = sub, chain
	}
	if lim := r.lane.rateLimiter(); lim != nil {
		if r.slot {
			e.releaseSlot(r) // waiting for the rate limit holds no slot either
		}
		if err := e.waitRate(ctx, lim); err != nil {
			return err
		}
	}
	if !r.slot {
		if err := e.acquireSlot(ctx, r); err != nil {
			return err
		}
	}
	return r.setHeaders(ctx, req)
}

// setHeaders sets the attempt request's headers, from now: the gateway's, the subscription's
// (r.sub), then the plugins' in order (r.chain). It notes the attempt's start and the headers
// the plugins set.
func (r *round) setHeaders(ctx context.Context, req *http.Request) error {
	e := r.e
	h := make(http.Header, 8+len(r.sub.Headers))
	req.Header = h
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", e.userAgent)
	h.Set("Webhook-Id", r.claim.Delivery.ID)
	r.at, r.monoStart = e.now().UTC(), time.Now()
	h.Set("Webhook-Timestamp", strconv.FormatInt(r.at.Unix(), 10))
	for name, value := range r.sub.Headers {
		h.Set(name, value)
	}
	// Plugins' own requests (oauth2's token request) are not the attempt.
	pluginCtx := context.WithValue(ctx, roundKey{}, (*round)(nil))
	before := h.Clone()
	for i, p := range r.chain {
		if err := p.Apply(pluginCtx, req, r.claim.Event.Payload); err != nil {
			return &pluginError{fmt.Errorf("plugin %d: %w", i, err)}
		}
	}
	r.pluginHeaders = pluginHeaders(before, req.Header)
	return nil
}

// waitRate waits for a token of the subscription's rate limit, or until the engine stops.
func (e *Engine) waitRate(ctx context.Context, lim *rate.Limiter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-e.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := lim.Wait(ctx); err != nil {
		select {
		case <-e.stopped:
			return errShuttingDown
		default:
			return err
		}
	}
	return nil
}

// checkRetry records the attempt that just ended, gives up its slot, and says whether to retry
// it in process: network errors and non-2xx answers are retried, except 410 Gone, and a 429
// or 503 whose Retry-After asks for longer than a quick retry waits (that becomes the durable
// retry). It runs after every attempt; the client drains and closes the body afterwards.
func (e *Engine) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	r := roundOf(ctx)
	if r == nil {
		return false, err
	}
	a := store.Attempt{At: r.at, Duration: time.Since(r.monoStart), TraceID: r.traceID}
	if err != nil {
		a.Error = errorText(err)
	} else {
		a.StatusCode = resp.StatusCode
		a.ResponseBody = readResponseBody(resp, r.pluginHeaders)
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
	retry := e.shouldRetry(ctx, r, resp, err)
	// Waiting for a quick retry holds no slot, except in a fifo subscription, where the next
	// delivery must wait for this one.
	e.noteAttempt(r.lane, succeeded(a)) // before the slot frees: a third failure makes a probe
	if r.slot && !(retry && r.fifo()) {
		e.releaseSlot(r)
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	return retry, nil
}

// readResponseBody returns the first responseBodyLimit bytes of resp's body with the attempt's
// credentials redacted (a target may echo the request's headers): the values of Authorization
// and of the headers the plugins set (pluginHeaders), as the request carried them. It reads
// as far past the limit as the longest credential reaches, so that one straddling the limit is
// redacted too.
func readResponseBody(resp *http.Response, pluginHeaders []string) []byte {
	var creds []string
	if resp.Request != nil {
		creds = credentials(resp.Request.Header, pluginHeaders)
	}
	extra := 0
	if len(creds) > 0 {
		extra = len(creds[0]) - 1 // longest first
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, int64(responseBodyLimit+extra)))
	body = redact(body, creds)
	return body[:min(len(body), responseBodyLimit)]
}

// shouldRetry decides whether an attempt that just ended is retried in process.
func (e *Engine) shouldRetry(ctx context.Context, r *round, resp *http.Response, err error) bool {
	r.retryAfter = 0
	if ctx.Err() != nil || len(r.attempts) > e.cfg.QuickRetries {
		return false
	}
	var blocked *config.BlockedError
	if errors.As(err, &blocked) {
		return false // the address will not change in a second
	}
	if err != nil {
		return true
	}
	code := resp.StatusCode
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		if wait, ok := retryAfter(resp.Header.Get("Retry-After"), e.now()); ok {
			r.retryAfter = wait
			if wait > e.client.RetryWaitMax {
				return false
			}
		}
	}
	return !(code >= 200 && code <= 299) && code != http.StatusGone
}

// fifo reports whether the round's subscription delivers one at a time.
func (r *round) fifo() bool { return r.sub != nil && r.sub.Policy.Ordering == store.FIFO }
