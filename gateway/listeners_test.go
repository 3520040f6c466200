package gateway_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
)

// send makes one request to base with token (none when empty) and reads the answer.
func send(t *testing.T, base, token, method, path, body string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// With admin.listen, the main listener serves ingest and the probes only, and the admin
// listener the management API, /metrics and the probes; a shutdown closes both.
func TestAdminListener(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Admin.Listen = "127.0.0.1:0"
		c.Ingest.Tokens = []string{"ingest-token"}
	})
	if e.admin == "" || e.admin == e.base {
		t.Fatalf("admin listener %q beside %q", e.admin, e.base)
	}

	// The main listener: ingest and the probes.
	r := send(t, e.base, "ingest-token", "POST", "/v1/events", `{"id": "e1", "type": "task.state.updated"}`)
	expect(t, r, http.StatusAccepted)
	for _, path := range []string{"/healthz", "/readyz"} {
		expect(t, send(t, e.base, "", "GET", path, ""), http.StatusOK)
		expect(t, send(t, e.admin, "", "GET", path, ""), http.StatusOK)
	}
	// Nothing else, not even with the admin token.
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/metrics", ""},
		{"GET", "/v1/webhooks", ""},
		{"POST", "/v1/webhooks", `{"url": "https://example.com/hooks"}`},
		{"GET", "/id-scan/v1/webhooks", ""},
		{"GET", "/v1/webhooks/x", ""},
		{"GET", "/v1/webhooks/x/deliveries", ""},
		{"POST", "/v1/webhooks/x/reactivate", ""},
		{"GET", "/api/WebhookRegistrations", ""},
		{"DELETE", "/api/WebhookRegistrations/x", ""},
		{"GET", "/v1/events/e1", ""},
		{"GET", "/v1/deliveries/x", ""},
		{"POST", "/v1/deliveries/x/retry", ""},
	} {
		r := send(t, e.base, adminToken, c.method, c.path, c.body)
		if r.status != http.StatusNotFound {
			t.Errorf("main listener: %s %s: %d, want 404\n%s", c.method, c.path, r.status, r.body)
		}
	}

	// The admin listener: the management API in both dialects, events and deliveries, metrics.
	r = send(t, e.admin, adminToken, "POST", "/v1/webhooks", `{"url": "https://example.com/hooks"}`)
	expect(t, r, http.StatusCreated)
	id := r.json(t)["id"].(string)
	for _, path := range []string{"/v1/webhooks", "/v1/webhooks/" + id, "/id-scan/v1/webhooks", "/api/WebhookRegistrations",
		"/api/WebhookRegistrations/" + id, "/v1/events/e1", "/v1/webhooks/" + id + "/deliveries"} {
		expect(t, send(t, e.admin, adminToken, "GET", path, ""), http.StatusOK)
		expectProblem(t, send(t, e.admin, "", "GET", path, ""), http.StatusUnauthorized)
	}
	r = send(t, e.admin, "", "GET", "/metrics", "")
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), "webhook_gateway_events_ingested_total") {
		t.Errorf("/metrics on the admin listener lacks the gateway's metrics:\n%.500s", r.body)
	}
	// Ingest is not served there.
	expectProblem(t, send(t, e.admin, "ingest-token", "POST", "/v1/events", `{"type": "task.state.updated"}`), http.StatusNotFound)

	if err := e.shutdown(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for _, base := range []string{e.base, e.admin} {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after the shutdown", base)
		}
	}
}
