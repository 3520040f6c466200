package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// guardedEnv delivers with the SSRF guard on (loopback refused), plain http allowed.
func guardedEnv(t *testing.T, cidrs ...string) *env {
	return engineEnv(t, func(c *config.Config) {
		c.Security.AllowPrivateNetworks = false
		c.Security.AllowedCIDRs = cidrs
		c.Delivery.QuickRetries = 2
		c.Delivery.Timeout = time.Second
	})
}

// declare stores a subscription as if it had passed registration earlier: a name that
// resolves to a private address (DNS rebinding), or rules that changed since.
func declare(t *testing.T, e *env, id, url string) {
	t.Helper()
	if err := e.store.CreateSubscription(context.Background(), &store.Subscription{
		ID: id, Kind: store.KindWebhook, Source: store.SourceAPI, URL: url,
		Events: []string{store.AllEvents}, Active: true, CreatedAt: start, UpdatedAt: start,
	}); err != nil {
		t.Fatal(err)
	}
}

func TestGuardBlocksAtDialTime(t *testing.T) {
	e := guardedEnv(t)
	rc := newReceiver(t, nil)
	// localhost resolves to a loopback address: the name passes no check, the address does not.
	declare(t, e, "rebound", strings.Replace(rc.URL, "127.0.0.1", "localhost", 1))
	e.post(t, `{"id": "d1", "type": "task.state.updated"}`)
	// A round is recorded once it has ended, quick retries included: from then on its
	// attempts are all counted, and a request that got through has already reached the
	// receiver (its answer came first). The durable retry is not due: the clock stands still.
	eventually(t, "the first round recorded", func() bool { return e.deliveryOf(t, "d1")["attempts"].(float64) >= 1 })
	d := e.deliveryOf(t, "d1")
	msg, _ := d["lastError"].(string)
	if !strings.HasPrefix(msg, "blocked: ") || !strings.Contains(msg, "is a loopback address") {
		t.Fatalf("lastError %q, want the guard's reason", msg)
	}
	if d["attempts"] != 1.0 || d["status"] != "pending" {
		t.Fatalf("a blocked attempt was retried in process: %v attempts, status %v", d["attempts"], d["status"])
	}
	if log := attemptsMatchLog(t, d); log[0].(map[string]any)["statusCode"] != nil {
		t.Fatalf("the blocked attempt has an answer: %v", log[0])
	}
	if rc.count() != 0 {
		t.Fatal("the guard let a delivery reach loopback")
	}
	// Registration refuses the literal address outright.
	expectProblem(t, e.do("POST", "/v1/webhooks", `{"url": "`+rc.URL+`"}`), 400, "url")
}

func TestGuardAllowedCIDRs(t *testing.T) {
	e := guardedEnv(t, "127.0.0.0/8", "::1/128")
	rc := newReceiver(t, nil)
	e.subscribe(t, rc.URL, "")
	e.post(t, `{"id": "c1", "type": "task.state.updated"}`)
	eventually(t, "delivered through allowed_cidrs", func() bool { return rc.count() == 1 })
}

// An environment proxy must not carry deliveries (it would connect for us, past the guard).
func TestEnvironmentProxyIsNotUsed(t *testing.T) {
	var proxied atomic.Int32
	proxy := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		proxied.Add(1)
		w.WriteHeader(http.StatusOK)
	})
	for _, v := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		t.Setenv(v, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	// The proxy is on loopback, which the guard would refuse: allow it, so that only not
	// using the proxy at all keeps the delivery from it.
	e := guardedEnv(t, "127.0.0.0/8", "::1/128")
	// A name that does not resolve: only a proxy could deliver it.
	declare(t, e, "via-proxy", "http://delivery-target.invalid/hooks")
	e.post(t, `{"id": "p1", "type": "task.state.updated"}`)
	eventually(t, "attempted", func() bool { return e.deliveryOf(t, "p1")["attempts"].(float64) >= 1 })
	if proxied.Load() != 0 {
		t.Fatal("the delivery went through the environment's proxy")
	}
	if msg, _ := e.deliveryOf(t, "p1")["lastError"].(string); strings.Contains(msg, "blocked") {
		t.Fatalf("lastError %q: the guard, not the transport, kept the proxy out", msg)
	}
}

// Rules checked at registration are checked again at delivery: the file may have changed.
func TestRulesAppliedAtDelivery(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowedHosts = []string{"hooks.example.com"}
		c.Delivery.QuickRetries = 0
	})
	rc := newReceiver(t, nil)
	declare(t, e, "not-allowed", rc.URL)
	e.post(t, `{"id": "h1", "type": "task.state.updated"}`)
	eventually(t, "attempted", func() bool { return e.deliveryOf(t, "h1")["attempts"] == 1.0 })
	if msg, _ := e.deliveryOf(t, "h1")["lastError"].(string); !strings.Contains(msg, "allowed_hosts") {
		t.Fatalf("lastError %q", msg)
	}
	if rc.count() != 0 {
		t.Fatal("delivered to a host outside allowed_hosts")
	}
}
