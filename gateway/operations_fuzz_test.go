package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// failedEnv is a gateway with one inactive subscription whose three deliveries (created a
// minute apart from start) failed: nothing in flight changes them while a fuzz test runs.
func failedEnv(f *testing.F) (*env, string) {
	e := newEnvWith(f, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowPrivateNetworks = true
		c.Delivery.QuickRetries = 0
		c.Delivery.Schedule = nil
	}, func(o *gatewayOptions) { o.PollInterval = 5 * time.Millisecond })
	r := e.do("POST", "/v1/webhooks", `{"url": "http://127.0.0.1:1/closed"}`)
	if r.status != http.StatusCreated {
		f.Fatalf("subscribe: %d %s", r.status, r.body)
	}
	sub := idIn(f, r.body)
	for i := range 3 {
		e.clock.Set(start.Add(time.Duration(i) * time.Minute))
		if r := e.doAs("", "POST", "/v1/events", fmt.Sprintf(`{"id": "f%d", "type": "task.state.updated"}`, i)); r.status != http.StatusAccepted {
			f.Fatalf("ingest: %d %s", r.status, r.body)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); snapshot(f, e) != "failed failed failed"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			f.Fatalf("not failed within 10s: %s", snapshot(f, e))
		}
	}
	if r := e.do("DELETE", "/api/WebhookRegistrations/"+sub, nil); r.status != http.StatusOK {
		f.Fatalf("deactivate: %d %s", r.status, r.body)
	}
	return e, sub
}

// idIn returns the id of the JSON object body.
func idIn(t testing.TB, body []byte) string {
	var v struct{ ID string }
	if err := json.Unmarshal(body, &v); err != nil || v.ID == "" {
		t.Fatalf("no id in %s (%v)", body, err)
	}
	return v.ID
}

// snapshot describes every delivery's status, newest first.
func snapshot(t testing.TB, e *env) string {
	ds, err := e.store.ListDeliveries(context.Background(), store.DeliveryFilter{}, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, string(d.Status))
	}
	return strings.Join(out, " ")
}

// fuzzBody posts arbitrary bodies to path through the real handler: each answer must be one of
// ok or a 4xx problem document, and a 4xx must leave every delivery as it was.
func fuzzBody(f *testing.F, e *env, path string, ok int, seeds []string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := snapshot(t, e)
		req := httptest.NewRequest("POST", path, strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := e.gw.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		switch {
		case resp.StatusCode == ok:
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("%d with Content-Type %q", resp.StatusCode, ct)
			}
			if after := snapshot(t, e); after != before {
				t.Fatalf("%d but the deliveries changed (%s, were %s): %s", resp.StatusCode, after, before, out)
			}
		default:
			t.Fatalf("status %d for %q: %s", resp.StatusCode, body, out)
		}
	})
}

func FuzzRecoverRequest(f *testing.F) {
	e, sub := failedEnv(f)
	fuzzBody(f, e, "/v1/webhooks/"+sub+"/recover", http.StatusAccepted, []string{
		`{"since": "1d"}`, `{"since": "2026-03-04T05:07:07.891Z", "until": "2026-03-04T05:08:07.891Z"}`,
		`{"since": "2026-03-04T05:07:07+00:00", "until": null}`, `{"since": "90m", "until": "30m"}`,
		`{"since": "7d", "until": "1h30m"}`, `{"since": ""}`, `{"since": "-1h"}`, `{"since": "1h", "until": "2h"}`,
		`{"since": "99999999999d"}`, `{"since": "2562047h"}`, `{"since": 5}`, `{"until": "1h"}`, `{}`, `[]`, `null`, ``,
		`{"since": "1h"} {}`, `{"since": "1h", "x": 1}`, `{"since": "2026-02-30T00:00:00Z"}`,
	})
}

func FuzzReplayRequest(f *testing.F) {
	e, sub := failedEnv(f)
	fuzzBody(f, e, "/v1/events/f1/replay", http.StatusAccepted, []string{
		`{"subscription": "` + sub + `"}`, `{"subscription": "nope"}`, `{"subscription": ""}`, `{"subscription": null}`,
		`{"subscription": 1}`, `{"subscription": "a", "b": 2}`, `{}`, `[]`, `"x"`, ``, `{"subscription": "` + sub + `"} 1`,
	})
}

func FuzzTestRequest(f *testing.F) {
	e, _ := failedEnv(f)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	f.Cleanup(target.Close)
	r := e.do("POST", "/v1/webhooks", `{"url": "`+target.URL+`"}`)
	if r.status != http.StatusCreated {
		f.Fatalf("subscribe: %d %s", r.status, r.body)
	}
	fuzzBody(f, e, "/v1/webhooks/"+idIn(f, r.body)+"/test", http.StatusOK, []string{
		``, ` `, `{}`, `{"type": "task.state.updated"}`, `{"eventType": "transaction.state.updated"}`,
		`{"type": "task.state.updated", "eventType": "task.state.updated"}`,
		`{"type": "task.state.updated", "eventType": "transaction.state.updated"}`, `{"type": ""}`, `{"type": null}`,
		`{"type": "nope"}`, `{"type": 1}`, `{"kind": "x"}`, `[]`, `null`, `{"type": "task.state.updated"} x`,
	})
}

// FuzzDeliveryListQuery lists with arbitrary filters: 200 or a 400 problem, never more.
func FuzzDeliveryListQuery(f *testing.F) {
	e, sub := failedEnv(f)
	for _, s := range [][4]string{
		{"failed", "1d", "", "task.state.updated"}, {"", "2026-03-04T05:07:07Z", "2026-03-04T06:00:00+01:00", ""},
		{"bogus", "yesterday", "-1h", "nope"}, {"pending", "0s", "99999999d", ""}, {"", " ", "1.5h", "task"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, status, since, until, eventType string) {
		q := url.Values{"status": {status}, "since": {since}, "until": {until}, "event_type": {eventType}, "subscription": {sub}}
		req := httptest.NewRequest("GET", "/v1/deliveries?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := e.gw.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d for %v: %s", resp.StatusCode, q, out)
		}
	})
}
