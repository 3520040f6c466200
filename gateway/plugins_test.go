package gateway_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
)

// The oauth2 plugin end to end: a token fetched once and reused; a target that starts refusing
// it (401) gets a new one on the next quick retry.
func TestOAuth2Delivery(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 2 })
	var issued atomic.Int32
	tokens := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if id, secret, _ := r.BasicAuth(); id != "gw" || secret != "client-s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token": "tok-%d", "token_type": "Bearer", "expires_in": 3600}`, issued.Add(1))
	})
	var mu sync.Mutex
	accept := "Bearer tok-1"
	target := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != accept {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	e.subscribe(t, target.URL, `, "plugins": [{"name": "oauth2", "config": {"token_url": "`+tokens.URL+`",
		"client_id": "gw", "client_secret": "client-s3cret", "scopes": ["hooks"]}}]`)
	e.post(t, `[{"id": "o1", "type": "task.state.updated"}, {"id": "o2", "type": "task.state.updated"}]`)
	eventually(t, "both delivered", func() bool {
		return e.deliveryStatus(t, "o1") == "succeeded" && e.deliveryStatus(t, "o2") == "succeeded"
	})
	if n := issued.Load(); n != 1 {
		t.Fatalf("%d tokens for two deliveries, want 1", n)
	}
	mu.Lock()
	accept = "Bearer tok-2" // the target rotates its keys: tok-1 is refused from now on
	mu.Unlock()
	e.post(t, `{"id": "o3", "type": "task.state.updated"}`)
	eventually(t, "delivered after a 401", func() bool { return e.deliveryStatus(t, "o3") == "succeeded" })
	if d := e.deliveryOf(t, "o3"); d["attempts"] != 2.0 || issued.Load() != 2 {
		t.Fatalf("attempts %v, tokens %d; want a 401 then a success with a new token", d["attempts"], issued.Load())
	}
}

// A plugin's own requests keep the delivery rules: the token endpoint passes the SSRF guard.
func TestOAuth2TokenFetchIsGuarded(t *testing.T) {
	e := guardedEnv(t)
	tokens := newReceiver(t, nil)
	declare(t, e, "oauth", "http://203.0.113.10/hooks")
	sub, err := e.store.UpdateSubscription(t.Context(), "oauth", func(s *subscription) error {
		s.Plugins = []plugin{{Name: "oauth2", Config: "token_url: " + tokens.URL + "\nclient_id: a\nclient_secret: b\n"}}
		return nil
	})
	if err != nil || len(sub.Plugins) != 1 {
		t.Fatal(err)
	}
	e.post(t, `{"id": "g1", "type": "task.state.updated"}`)
	eventually(t, "attempted", func() bool { return e.deliveryOf(t, "g1")["attempts"].(float64) >= 1 })
	msg, _ := e.deliveryOf(t, "g1")["lastError"].(string)
	if !strings.Contains(msg, "oauth2") || !strings.Contains(msg, "blocked: 127.0.0.1 is a loopback address") {
		t.Fatalf("lastError %q", msg)
	}
	if tokens.count() != 0 {
		t.Fatal("the token fetch reached loopback past the guard")
	}
}

// No secret reaches an API response or a log line, whatever happens to its deliveries.
func TestSecretsNeverShown(t *testing.T) {
	var logs bytes.Buffer
	var logMu sync.Mutex
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
		c.Delivery.QuickRetries = 1
	}, func(o *gatewayOptions) {
		o.QuickRetryWait = 1
		o.PollInterval = 5e6
		o.Logger = slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs, mu: &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	failing := newReceiver(t, status(http.StatusInternalServerError))
	secrets := []string{"basic-pw-1", "bearer-tok-2", "hdr-secret-3", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "cb-pw-4", "oauth-secret-5"}
	id := e.subscribe(t, failing.URL, `, "plugins": [
		{"name": "basic-auth", "config": {"username": "u", "password": "basic-pw-1"}},
		{"name": "bearer", "config": {"token": "bearer-tok-2"}},
		{"name": "headers", "config": {"X-Api-Key": "hdr-secret-3"}},
		{"name": "hmac", "config": {"secret": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}}]`)
	reg := e.do("POST", "/api/WebhookRegistrations", `{"requestId": "r", "callBackUrl": "`+failing.URL+`",
		"callBackUserName": "u", "callBackPassword": "cb-pw-4", "sourceSenderId": "s"}`)
	expect(t, reg, 201)
	oauth := e.subscribe(t, "http://127.0.0.1:1/none", `, "plugins": [{"name": "oauth2", "config": {
		"token_url": "http://127.0.0.1:1/token", "client_id": "c", "client_secret": "oauth-secret-5"}}]`)
	e.post(t, `{"id": "sec1", "type": "task.state.updated"}`)
	eventually(t, "attempted", func() bool {
		d := e.do("GET", "/v1/webhooks/"+id+"/deliveries", nil).list(t)
		return len(d) == 1 && d[0]["attempts"].(float64) >= 2
	})
	var seen bytes.Buffer
	for _, path := range []string{"/v1/webhooks", "/api/WebhookRegistrations", "/v1/webhooks/" + id,
		"/api/WebhookRegistrations/" + reg.json(t)["registrationId"].(string), "/v1/events/sec1",
		"/v1/webhooks/" + id + "/deliveries", "/v1/webhooks/" + oauth + "/deliveries"} {
		r := e.do("GET", path, nil)
		expect(t, r, 200)
		seen.Write(r.body)
	}
	for _, d := range e.do("GET", "/v1/events/sec1", nil).json(t)["deliveries"].([]any) {
		seen.Write(e.do("GET", "/v1/deliveries/"+d.(map[string]any)["id"].(string), nil).body)
	}
	if err := e.shutdown(); err != nil {
		t.Fatal(err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if logs.Len() == 0 {
		t.Fatal("no log lines to check")
	}
	for _, s := range secrets {
		if bytes.Contains(seen.Bytes(), []byte(s)) {
			t.Errorf("secret %q in an API response", s)
		}
		if bytes.Contains(logs.Bytes(), []byte(s)) {
			t.Errorf("secret %q in the log", s)
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestInboundLimits(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Ingest.MaxBodyBytes = 1 << 10 })
	get := func(header int) (int, error) {
		req, _ := http.NewRequest("GET", e.base+"/v1/webhooks", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("X-Pad", strings.Repeat("a", header))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(8 << 10); err != nil || code != http.StatusOK {
		t.Fatalf("8 KiB of headers: %d %v, want 200", code, err)
	}
	// Past 16 KiB the server refuses: a 431, or (when it closes before reading all that was
	// sent) a reset connection. Either way nothing is served.
	if code, err := get(64 << 10); err == nil && code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers: %d, want 431 or a refused connection", code)
	}
	expectProblem(t, e.doAs("", "POST", "/v1/events", `{"type": "task.state.updated", "pad": "`+strings.Repeat("x", 2<<10)+`"}`), 413)
}

// Plugins declared in gateway.yaml sign and authenticate real deliveries: the receiver checks
// the Standard Webhooks signature with the standard library only.
func TestDeclaredPluginsOnTheWire(t *testing.T) {
	e := engineEnv(t, nil)
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	rc := newReceiver(t, nil)
	cfg, err := config.Parse([]byte(`
security: { require_https: false, allow_private_networks: true }
subscriptions:
  - id: billing
    url: `+rc.URL+`/hooks
    plugins:
      - name: headers
        config: { X-Team: billing }
      - name: hmac
        config: { secret: "${WHSEC}" }
`), func(k string) (string, bool) { return secret, k == "WHSEC" }, builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.gw.SyncSubscriptions(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	e.post(t, `{"id": "y1", "type": "task.state.updated", "n": 1}`)
	eventually(t, "delivered", func() bool { return rc.count() > 0 })
	got := rc.request(0)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", got.header.Get("Webhook-Id"), got.header.Get("Webhook-Timestamp"))
	mac.Write(got.body)
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); got.header.Get("Webhook-Signature") != want {
		t.Fatalf("webhook-signature %q, want %q", got.header.Get("Webhook-Signature"), want)
	}
	if got.header.Get("X-Team") != "billing" {
		t.Fatalf("X-Team %q", got.header.Get("X-Team"))
	}
}

// A plugin's own URL (oauth2's token_url) is held to the target rules wherever it is set.
func TestPluginURLsFollowTheTargetRules(t *testing.T) {
	bad := `{"name": "oauth2", "config": {"token_url": "http://auth.example.com/token", "client_id": "a", "client_secret": "b"}}`
	e := newEnv(t, nil) // require_https
	expectProblem(t, e.do("POST", "/v1/webhooks", `{"url": "https://example.com", "plugins": [`+bad+`]}`), 400, "plugins[0].config")
	private := `{"name": "oauth2", "config": {"token_url": "https://10.0.0.1/token", "client_id": "a", "client_secret": "b"}}`
	expectProblem(t, e.do("POST", "/v1/webhooks", `{"url": "https://example.com", "plugins": [`+private+`]}`), 400, "plugins[0].config")
	_, err := config.Parse([]byte(`
security: { allowed_hosts: ["*.example.com"] }
subscriptions:
  - id: a
    url: https://hooks.example.com/
    plugins:
      - name: oauth2
        config: { token_url: "https://auth.elsewhere.test/token", client_id: a, client_secret: b }
`), func(string) (string, bool) { return "", false }, builtin.Registry())
	if err == nil || !strings.Contains(err.Error(), "subscriptions[0].plugins[0].config: the plugin's URL host") {
		t.Fatalf("validate: %v", err)
	}
	// And when the request is made: a token_url the rules refuse by now is not asked.
	e2 := engineEnv(t, func(c *config.Config) { c.Security.AllowedHosts = []string{"hooks.example.com"} })
	tokens := newReceiver(t, nil)
	declare(t, e2, "oauth", "http://203.0.113.10/hooks")
	if _, err := e2.store.UpdateSubscription(t.Context(), "oauth", func(s *subscription) error {
		s.Plugins = []plugin{{Name: "oauth2", Config: "token_url: " + tokens.URL + "\nclient_id: a\nclient_secret: b\n"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e2.post(t, `{"id": "u1", "type": "task.state.updated"}`)
	eventually(t, "attempted", func() bool { return e2.deliveryOf(t, "u1")["attempts"].(float64) >= 1 })
	if msg, _ := e2.deliveryOf(t, "u1")["lastError"].(string); !strings.Contains(msg, "not in security.allowed_hosts") {
		t.Fatalf("lastError %q", msg)
	}
	if tokens.count() != 0 {
		t.Fatal("the token endpoint was asked past allowed_hosts")
	}
}
