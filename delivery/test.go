package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/store"
)

// TestAttempt sends ev to sub once, now, as an attempt of a delivery with the id webhookID
// would go: the same headers, the subscription's plugins (signatures, credentials) and the
// same client (security rules, delivery.timeout, an attempt span), and returns the attempt as
// the attempt log would keep it (the response body's first 1 KiB, with the attempt's
// credentials redacted). It makes no quick retry, records nothing in the store, leaves the
// subscription's state, slots and rate limit alone, and sends whether or not the subscription
// is active. A failure to prepare the request (a plugin's, a bad URL) is the attempt's Error.
func (e *Engine) TestAttempt(ctx context.Context, sub *store.Subscription, ev *store.Event, webhookID string) store.Attempt {
	r := &round{
		e:     e,
		claim: &store.Claim{Delivery: &store.Delivery{ID: webhookID, EventID: ev.ID, EventType: ev.Type, SubscriptionID: sub.ID}, Event: ev},
		sub:   sub,
	}
	ctx = plugins.WithClient(context.WithValue(ctx, roundKey{}, r), e.client.HTTPClient)
	failed := func(err error) store.Attempt {
		return store.Attempt{At: e.now().UTC(), Error: err.Error()}
	}
	chain, err := e.chains.get(sub, e.plugins)
	if err != nil {
		return failed(fmt.Errorf("plugin configuration: %w", err))
	}
	r.chain = chain
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.URL, bytes.NewReader(ev.Payload))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, whose query may hold a secret
		}
		return failed(fmt.Errorf("target URL: %w", err))
	}
	if err := r.setHeaders(ctx, req); err != nil {
		return failed(err)
	}
	resp, err := e.client.HTTPClient.Do(req)
	a := store.Attempt{At: r.at, TraceID: r.traceID}
	if err != nil {
		a.Duration, a.Error = time.Since(r.monoStart), errorText(err)
		return a
	}
	defer resp.Body.Close()
	a.StatusCode = resp.StatusCode
	a.ResponseBody = readResponseBody(resp, r.pluginHeaders)
	a.Duration = time.Since(r.monoStart)
	if len(a.ResponseBody) == 0 {
		a.ResponseBody = nil
	}
	for _, p := range r.chain {
		if o, ok := p.(plugins.ResponseObserver); ok {
			o.Observe(resp.Request, resp) // a 401 makes oauth2 fetch a new token next time
		}
	}
	return a
}
