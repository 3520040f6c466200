package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
)

// TestJSONResponsesEndWithNewline checks that every kind of JSON answer (a created resource,
// a list, a problem, an ingest reply, health) is one JSON value followed by one newline, so
// that curl's output ends its line.
func TestJSONResponsesEndWithNewline(t *testing.T) {
	e := newEnv(t, nil)
	created := e.do("POST", "/v1/webhooks", `{"url": "https://example.com/hooks"}`)
	expect(t, created, http.StatusCreated)
	id, _ := created.json(t)["id"].(string)

	for _, c := range []struct {
		name string
		r    response
		want int
	}{
		{"created webhook", created, http.StatusCreated},
		{"one webhook", e.do("GET", "/v1/webhooks/"+id, nil), http.StatusOK},
		{"webhook list", e.do("GET", "/v1/webhooks", nil), http.StatusOK},
		{"registration list", e.do("GET", "/api/WebhookRegistrations", nil), http.StatusOK},
		{"problem", e.do("POST", "/v1/webhooks", `{"url": "http://example.com"}`), http.StatusBadRequest},
		{"ingest", e.doAs("", "POST", "/v1/events", `{"id": "evt-1", "type": "task.state.updated"}`), http.StatusAccepted},
		{"ingest batch", e.doAs("", "POST", "/v1/events", `[{"type": "task.state.updated"}]`), http.StatusAccepted},
		{"healthz", e.doAs("", "GET", "/healthz", nil), http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			expect(t, c.r, c.want)
			body, ok := bytes.CutSuffix(c.r.body, []byte("\n"))
			if !ok || bytes.HasSuffix(body, []byte("\n")) {
				t.Fatalf("body %q does not end with exactly one newline", c.r.body)
			}
			if !json.Valid(body) {
				t.Fatalf("body %q is not one JSON value and a newline", c.r.body)
			}
		})
	}
}
