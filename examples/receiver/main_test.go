package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestReceiverPrints checks that a delivery's Standard Webhooks headers, trace context,
// credentials, custom headers and body are printed, and that the first -fail deliveries get 500.
func TestReceiverPrints(t *testing.T) {
	var out strings.Builder
	rc := &receiver{out: &out, fail: 1}
	body := `{"id":"evt-1","type":"transaction.state.updated"}`
	send := func() int {
		req := httptest.NewRequest("POST", "/webhook", strings.NewReader(body))
		for k, v := range map[string]string{
			"Content-Type":       "application/json",
			"User-Agent":         "webhook-gateway/dev",
			"webhook-id":         "0b9a7c2e-msg",
			"webhook-timestamp":  "1764566400",
			"webhook-signature":  "v1,c2lnbmF0dXJl v1,b2xk",
			"traceparent":        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"Authorization":      "Basic anJvbGw6MTIzNA==",
			"X-Gateway-Example":  "local",
			"My-Custom-Header":   "Example",
			"X-Another-Header":   "two",
			"Accept-Encoding":    "gzip",
			"Webhook-Unexpected": "shown too",
		} {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		rc.ServeHTTP(rec, req)
		return rec.Code
	}
	if got := send(); got != http.StatusInternalServerError {
		t.Errorf("first delivery with -fail 1: status %d, want 500", got)
	}
	if got := send(); got != http.StatusOK {
		t.Errorf("second delivery with -fail 1: status %d, want 200", got)
	}

	want := `#1 POST /webhook -> 500
  webhook-id: 0b9a7c2e-msg
  webhook-timestamp: 1764566400
  webhook-signature: v1,c2lnbmF0dXJl v1,b2xk
  traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
  authorization: Basic anJvbGw6MTIzNA==
  My-Custom-Header: Example
  Webhook-Unexpected: shown too
  X-Another-Header: two
  X-Gateway-Example: local
  ` + body + `
`
	want += strings.Replace(want, "#1 POST /webhook -> 500", "#2 POST /webhook -> 200", 1)
	if got := out.String(); got != want {
		t.Errorf("printed:\n%s\nwant:\n%s", got, want)
	}
}

// TestReceiverWithoutOptionalHeaders checks that headers a delivery lacks are left out rather
// than printed empty.
func TestReceiverWithoutOptionalHeaders(t *testing.T) {
	var out strings.Builder
	rc := &receiver{out: &out}
	req := httptest.NewRequest("POST", "/webhook?x=1", strings.NewReader(`{}`))
	req.Header.Set("webhook-id", "msg-1")
	rec := httptest.NewRecorder()
	rc.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("status %d, want 200", rec.Code)
	}
	want := "#1 POST /webhook?x=1 -> 200\n  webhook-id: msg-1\n  {}\n"
	if got := out.String(); got != want {
		t.Errorf("printed %q, want %q", got, want)
	}
}
