package gateway_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/webhookgw/gateway/store"
)

// fuzzRoute posts arbitrary bodies to a create route through the real handler: each answer must
// be 201 or a 4xx problem document, and a 4xx must leave the store as it was.
func fuzzRoute(f *testing.F, path string, seeds []string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	e := newEnv(f, nil)
	count := func(t *testing.T) int {
		subs, err := e.store.ListSubscriptions(context.Background(), store.ListOptions{Limit: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		return len(subs)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := count(t)
		req := httptest.NewRequest("POST", path, strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.gw.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		switch {
		case resp.StatusCode == 201:
			if count(t) != before+1 {
				t.Fatalf("201 but %d stored, had %d", count(t), before)
			}
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("%d with Content-Type %q", resp.StatusCode, ct)
			}
			if count(t) != before {
				t.Fatalf("%d but the store changed: %s", resp.StatusCode, out)
			}
		default:
			t.Fatalf("status %d for %q: %s", resp.StatusCode, body, out)
		}
	})
}

func FuzzWebhookRequest(f *testing.F) {
	fuzzRoute(f, "/v1/webhooks", []string{
		`{"url": "https://example.com"}`,
		`{"url": "https://example.com", "events": ["transaction.state.updated", "task.state.updated"]}`,
		`{"url": "https://example.com", "headers": {"My-Custom-Header": "Example"}}`,
		`{"url": "https://example.com", "plugins": [{"name": "basic-auth", "config": {"username": "u", "password": "p"}}]}`,
		`{"url": "https://example.com", "plugins": [{"name": "headers", "config": {"X-A": "b"}}]}`,
		`{"url": "http://x", "events": ["nope"], "headers": {"Bad Name": "\u0000"}}`,
		`{"url": null, "events": null, "headers": null, "plugins": null}`,
		`[]`, `null`, `{`, `{"url": "https://example.com"} x`,
		`{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": 16, "rateLimit": 50, "ordering": "fifo"}}`,
		`{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": 1, "rateLimit": 0.5, "ordering": "fifo"}}`,
		`{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": null, "rateLimit": null, "ordering": null}}`,
		`{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": 0, "rateLimit": -1e400, "ordering": "lifo", "burst": 2}}`,
		`{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": 1.5, "rateLimit": "50", "ordering": 1}}`,
		`{"url": "https://example.com", "deliveryPolicy": null}`, `{"url": "https://example.com", "deliveryPolicy": [16]}`,
	})
}

func FuzzRegistrationRequest(f *testing.F) {
	fuzzRoute(f, "/api/WebhookRegistrations", []string{
		`{"requestId": "r", "callBackUrl": "https://example.com", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "s"}`,
		`{"requestId": "R4J39QO2DC-YP3B-3BT2-5AC9-FFOP111SLGN0", "callBackUrl": "string", "callBackUserName": "string", "callBackPassword": "string"}`,
		`{"requestId": "r", "callBackUrl": "https://example.com", "callBackUserName": "a:b", "callBackPassword": "", "sourceSenderId": "s", "isActive": false}`,
		`{"isActive": "yes"}`, `{}`, `[1]`, `"x"`,
		`{"requestId": "r", "callBackUrl": "https://example.com", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "s", "deliveryPolicy": {"maxInFlight": 16, "rateLimit": 50}}`,
		`{"requestId": "r", "callBackUrl": "https://example.com", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "s", "deliveryPolicy": {"ordering": "fifo", "rateLimit": 0.25}}`,
		`{"requestId": "r", "callBackUrl": "https://example.com", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "s", "deliveryPolicy": {"ordering": "fifo", "maxInFlight": 2}}`,
		`{"requestId": "r", "callBackUrl": "https://example.com", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "s", "deliveryPolicy": {"maxInFlight": 99999999999999999999, "Ordering": null}}`,
		`{"deliveryPolicy": {"rateLimit": 0, "x": 1}}`, `{"deliveryPolicy": "fifo"}`, `{"deliveryPolicy": null}`,
	})
}
