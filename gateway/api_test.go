package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins/builtin"
)

var (
	uuidPattern     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	seedTimePattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$`)
)

func TestManagementRoutesNeedAdminToken(t *testing.T) {
	e := newEnv(t, nil)
	routes := []struct{ method, path string }{
		{"POST", "/v1/webhooks"}, {"GET", "/v1/webhooks"}, {"GET", "/v1/webhooks/x"},
		{"PUT", "/v1/webhooks/x"}, {"DELETE", "/v1/webhooks/x"},
		{"POST", "/id-scan/v1/webhooks"}, {"GET", "/id-scan/v1/webhooks/x"},
		{"POST", "/api/WebhookRegistrations"}, {"GET", "/api/WebhookRegistrations"},
		{"GET", "/api/WebhookRegistrations/x"}, {"PUT", "/api/WebhookRegistrations/x"},
		{"DELETE", "/api/WebhookRegistrations/x"},
	}
	for _, rt := range routes {
		for _, token := range []string{"", "wrong", adminToken + "x", strings.ToUpper(adminToken)} {
			r := e.doAs(token, rt.method, rt.path, `{"url":"https://example.com"}`)
			expectProblem(t, r, http.StatusUnauthorized)
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", rt.method, rt.path)
			}
		}
	}
	if e.count() != 0 {
		t.Fatal("an unauthenticated request stored something")
	}
	expect(t, e.do("GET", "/v1/webhooks", nil), http.StatusOK)
	expect(t, e.doAs("", "GET", "/healthz", nil), http.StatusOK)
	expect(t, e.doAs("", "GET", "/readyz", nil), http.StatusOK)
}

func TestGatewayRefusesNoAdminToken(t *testing.T) {
	e := newEnv(t, nil)
	_, err := gateway.New(gateway.Options{Config: config.Default(), Store: e.store, Plugins: builtin.Registry()})
	if err == nil {
		t.Fatal("New accepted a configuration without admin tokens")
	}
}

func TestCreateWebhookSeedResponse(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("POST", "/v1/webhooks", `{"url": "https://example.com"}`)
	expect(t, r, http.StatusCreated)
	got := keys(t, r.body)
	want := []string{"id", "url", "events", "headers", "updatedAt", "createdAt"}
	if strings.Join(got[:6], ",") != strings.Join(want, ",") {
		t.Fatalf("fields %v, want the seed's %v first", got, want)
	}
	w := r.json(t)
	if !uuidPattern.MatchString(w["id"].(string)) {
		t.Errorf("id %q is not a UUID", w["id"])
	}
	if w["url"] != "https://example.com" || w["headers"] != nil {
		t.Errorf("url or headers: %s", r.body)
	}
	events, _ := json.Marshal(w["events"])
	if string(events) != `["transaction.state.updated","task.state.updated"]` {
		t.Errorf("default events %s", events)
	}
	if w["createdAt"] != "2026-03-04T05:06:07+00:00" || w["updatedAt"] != "2026-03-04T05:06:07+00:00" {
		t.Errorf("times: createdAt %v updatedAt %v, want RFC 3339 with +00:00", w["createdAt"], w["updatedAt"])
	}
	if _, err := time.Parse(time.RFC3339, w["createdAt"].(string)); err != nil {
		t.Error(err)
	}
	if w["isActive"] != true || w["isInErrorState"] != false {
		t.Errorf("state fields: %s", r.body)
	}
	if loc := r.header.Get("Location"); loc != "/v1/webhooks/"+w["id"].(string) {
		t.Errorf("Location %q", loc)
	}

	r = e.do("GET", "/v1/webhooks/"+w["id"].(string), nil)
	expect(t, r, http.StatusOK)
	if got := r.json(t); got["url"] != "https://example.com" {
		t.Fatalf("GET: %s", r.body)
	}
}

func TestCreateWebhookWithEventsAndHeaders(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("POST", "/id-scan/v1/webhooks", map[string]any{
		"url":     "https://example.com/hooks",
		"events":  []string{"task.state.updated", "task.state.updated"},
		"headers": map[string]string{"My-Custom-Header": "Example"},
		"plugins": []map[string]any{{"name": "bearer", "config": map[string]string{"token": "s3cr3t"}}},
	})
	expect(t, r, http.StatusCreated)
	w := r.json(t)
	if ev, _ := json.Marshal(w["events"]); string(ev) != `["task.state.updated"]` {
		t.Errorf("events %s", ev)
	}
	if h := w["headers"].(map[string]any); h["My-Custom-Header"] != "Example" {
		t.Errorf("headers %v", h)
	}
	if strings.Contains(string(r.body), "s3cr3t") {
		t.Errorf("a plugin secret is in the response: %s", r.body)
	}
	if p, _ := json.Marshal(w["plugins"]); string(p) != `[{"name":"bearer"}]` {
		t.Errorf("plugins %s", p)
	}
	// The alias and the main path are one set.
	if l := e.do("GET", "/v1/webhooks", nil).list(t); len(l) != 1 || l[0]["id"] != w["id"] {
		t.Fatalf("list through /v1/webhooks: %v", l)
	}
}

func TestWebhookBadInputStoresNothing(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Security.AllowedHosts = []string{"*.example.com", "example.com"} })
	cases := []struct {
		name   string
		body   string
		status int
		fields []string
	}{
		{"empty body", ``, 400, nil},
		{"malformed", `{"url": "https://example.com"`, 400, nil},
		{"not an object", `["https://example.com"]`, 400, nil},
		{"trailing data", `{"url": "https://example.com"} {}`, 400, nil},
		{"missing url", `{"events": ["task.state.updated"]}`, 400, []string{"url"}},
		{"url wrong type", `{"url": 42}`, 400, []string{"url"}},
		{"http url", `{"url": "http://example.com"}`, 400, []string{"url"}},
		{"relative url", `{"url": "/hooks"}`, 400, []string{"url"}},
		{"no host", `{"url": "https://"}`, 400, []string{"url"}},
		{"credentials in url", `{"url": "https://u:p@example.com"}`, 400, []string{"url"}},
		{"host not allowed", `{"url": "https://evil.test/x"}`, 400, []string{"url"}},
		{"unknown event", `{"url": "https://example.com", "events": ["payment.made"]}`, 400, []string{"events[0]"}},
		{"events wrong type", `{"url": "https://example.com", "events": "task.state.updated"}`, 400, []string{"events"}},
		{"header wrong type", `{"url": "https://example.com", "headers": {"X": 1}}`, 400, []string{"headers"}},
		{"reserved header", `{"url": "https://example.com", "headers": {"webhook-id": "x"}}`, 400, []string{"headers.webhook-id"}},
		{"bad header name", `{"url": "https://example.com", "headers": {"Bad Name": "x"}}`, 400, []string{"headers.Bad Name"}},
		{"unknown field", `{"url": "https://example.com", "secret": "x"}`, 400, []string{"secret"}},
		{"unknown plugin", `{"url": "https://example.com", "plugins": [{"name": "nope"}]}`, 400, []string{"plugins[0]"}},
		{"plugin unknown key", `{"url": "https://example.com", "plugins": [{"name": "basic-auth", "config": {"username": "u", "pasword": "p"}}]}`, 400, []string{"plugins[0].config.pasword"}},
		{"plugin bad config", `{"url": "https://example.com", "plugins": [{"name": "bearer", "config": {}}]}`, 400, []string{"plugins[0].config.token"}},
		{"plugin without name", `{"url": "https://example.com", "plugins": [{"config": {}}]}`, 400, []string{"plugins[0].name"}},
		{"oversized", `{"url": "https://example.com", "headers": {"X": "` + strings.Repeat("a", 70000) + `"}}`, 413, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := expectProblem(t, e.do("POST", "/v1/webhooks", tc.body), tc.status, tc.fields...)
			if p["detail"] == "" {
				t.Error("problem without detail")
			}
			if e.count() != 0 {
				t.Fatal("bad input was stored")
			}
		})
	}
	// Several problems are reported at once.
	p := expectProblem(t, e.do("POST", "/v1/webhooks", `{"url": "http://x", "events": ["a"]}`), 400, "url", "events[0]")
	if msg := p["errors"].([]any)[1].(map[string]any)["message"].(string); !strings.Contains(msg, "transaction.state.updated, task.state.updated") {
		t.Errorf("unknown event message does not list the accepted types: %q", msg)
	}
}

func TestReplaceAndDeleteWebhook(t *testing.T) {
	e := newEnv(t, nil)
	id := e.do("POST", "/v1/webhooks", `{"url": "https://example.com", "headers": {"A": "1"}}`).json(t)["id"].(string)
	e.clock.Set(start.Add(time.Hour))

	r := e.do("PUT", "/v1/webhooks/"+id, `{"url": "https://example.org/new", "events": ["task.state.updated"]}`)
	expect(t, r, http.StatusOK)
	w := r.json(t)
	if w["url"] != "https://example.org/new" || w["headers"] != nil || w["id"] != id {
		t.Fatalf("after PUT: %s", r.body)
	}
	if w["createdAt"] != "2026-03-04T05:06:07+00:00" || w["updatedAt"] != "2026-03-04T06:06:07+00:00" {
		t.Fatalf("PUT times: %s", r.body)
	}
	expectProblem(t, e.do("PUT", "/v1/webhooks/"+id, `{"events": ["task.state.updated"]}`), 400, "url")
	expectProblem(t, e.do("PUT", "/v1/webhooks/missing", `{"url": "https://example.com"}`), 404)
	if got := e.do("GET", "/v1/webhooks/"+id, nil).json(t); got["url"] != "https://example.org/new" {
		t.Fatalf("a refused PUT changed the webhook: %v", got)
	}

	expect(t, e.do("DELETE", "/id-scan/v1/webhooks/"+id, nil), http.StatusNoContent)
	expectProblem(t, e.do("GET", "/v1/webhooks/"+id, nil), 404)
	expectProblem(t, e.do("DELETE", "/v1/webhooks/"+id, nil), 404)
}

func TestRegistrationSeedResponse(t *testing.T) {
	e := newEnv(t, nil)
	body := `{
	  "requestId": "R4J39QO2DC-YP3B-3BT2-5AC9-FFOP111SLGN0",
	  "callBackUrl": "https://www.yoururl.com/callback",
	  "callBackUserName": "jroll",
	  "callBackPassword": "1234",
	  "sourceSenderId": "hk7xmlhs-7lkc-a0cn-aluv-hk7xkg67c14l"
	}`
	r := e.do("POST", "/api/WebhookRegistrations", body)
	expect(t, r, http.StatusCreated)
	want := []string{"registrationId", "requestId", "callBackUrl", "callBackUserName", "callBackPassword",
		"subMerchantId", "merchantId", "isActive", "deactivatedAt", "isInErrorState", "errorStateReason", "detectedErrorStateAt"}
	if got := keys(t, r.body); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("fields %v, want %v", got, want)
	}
	w := r.json(t)
	checks := map[string]any{
		"requestId": "R4J39QO2DC-YP3B-3BT2-5AC9-FFOP111SLGN0", "callBackUrl": "https://www.yoururl.com/callback",
		"callBackUserName": "jroll", "callBackPassword": "********",
		"subMerchantId": "hk7xmlhs-7lkc-a0cn-aluv-hk7xkg67c14l", "merchantId": "hk7xmlhs-7lkc-a0cn-aluv-hk7xkg67c14l",
		"isActive": true, "deactivatedAt": nil, "isInErrorState": false, "errorStateReason": nil, "detectedErrorStateAt": nil,
	}
	for k, v := range checks {
		if w[k] != v {
			t.Errorf("%s = %v, want %v", k, w[k], v)
		}
	}
	if strings.Contains(string(r.body), "1234") {
		t.Error("the password is in the response")
	}
	id := w["registrationId"].(string)
	if !uuidPattern.MatchString(id) {
		t.Errorf("registrationId %q is not a UUID", id)
	}

	// The same subscription in dialect 1: every event type, no headers.
	d1 := e.do("GET", "/v1/webhooks/"+id, nil).json(t)
	if ev, _ := json.Marshal(d1["events"]); string(ev) != `["transaction.state.updated","task.state.updated"]` {
		t.Errorf("a registration's events in dialect 1: %s", ev)
	}
	// And a webhook in dialect 2: both lists hold both.
	e.do("POST", "/v1/webhooks", `{"url": "https://example.com"}`)
	if n := len(e.do("GET", "/api/WebhookRegistrations", nil).list(t)); n != 2 {
		t.Errorf("dialect 2 lists %d, want 2", n)
	}
	if n := len(e.do("GET", "/v1/webhooks", nil).list(t)); n != 2 {
		t.Errorf("dialect 1 lists %d, want 2", n)
	}
}

func TestRegistrationRevealSecrets(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Admin.RevealSecrets = true })
	r := e.do("POST", "/api/WebhookRegistrations", `{"requestId":"r","callBackUrl":"https://example.com","callBackUserName":"u","callBackPassword":"pw","sourceSenderId":"s"}`)
	if w := r.json(t); w["callBackPassword"] != "pw" {
		t.Fatalf("reveal_secrets: password %v", w["callBackPassword"])
	}
}

func TestRegistrationMissingFieldsAreEachNamed(t *testing.T) {
	e := newEnv(t, nil)
	all := []string{"requestId", "callBackUrl", "callBackUserName", "callBackPassword", "sourceSenderId"}
	expectProblem(t, e.do("POST", "/api/WebhookRegistrations", `{}`), 400, all...)
	full := map[string]any{"requestId": "r", "callBackUrl": "https://example.com", "callBackUserName": "u",
		"callBackPassword": "p", "sourceSenderId": "s"}
	for _, f := range all {
		body := map[string]any{}
		for k, v := range full {
			if k != f {
				body[k] = v
			}
		}
		p := expectProblem(t, e.do("POST", "/api/WebhookRegistrations", body), 400, f)
		if n := len(p["errors"].([]any)); n != 1 {
			t.Errorf("without %s: %d errors, want 1", f, n)
		}
		body[f] = ""
		expectProblem(t, e.do("POST", "/api/WebhookRegistrations", body), 400, f)
		body[f] = 7
		expectProblem(t, e.do("POST", "/api/WebhookRegistrations", body), 400, f)
	}
	bad := map[string]any{}
	for k, v := range full {
		bad[k] = v
	}
	bad["callBackUrl"] = "http://example.com"
	expectProblem(t, e.do("POST", "/api/WebhookRegistrations", bad), 400, "callBackUrl")
	bad["callBackUrl"], bad["callBackUserName"] = "https://example.com", "a:b"
	expectProblem(t, e.do("POST", "/api/WebhookRegistrations", bad), 400, "callBackUserName")
	if e.count() != 0 {
		t.Fatal("bad input was stored")
	}
}

func TestRegistrationDeactivateAndReactivate(t *testing.T) {
	e := newEnv(t, nil)
	id := e.do("POST", "/api/WebhookRegistrations", `{"requestId":"r","callBackUrl":"https://example.com","callBackUserName":"u","callBackPassword":"p","sourceSenderId":"s"}`).json(t)["registrationId"].(string)
	e.clock.Set(start.Add(time.Minute))

	r := e.do("DELETE", "/api/WebhookRegistrations/"+id, nil)
	expect(t, r, http.StatusOK)
	w := r.json(t)
	if w["isActive"] != false || w["deactivatedAt"] != "2026-03-04T05:07:07.891Z" {
		t.Fatalf("after DELETE: %s", r.body)
	}
	if !seedTimePattern.MatchString(w["deactivatedAt"].(string)) {
		t.Errorf("deactivatedAt %q is not in the seed's form", w["deactivatedAt"])
	}
	// Kept, and a second DELETE keeps the first time.
	e.clock.Set(start.Add(2 * time.Minute))
	if w := e.do("DELETE", "/api/WebhookRegistrations/"+id, nil).json(t); w["deactivatedAt"] != "2026-03-04T05:07:07.891Z" {
		t.Fatalf("second DELETE moved deactivatedAt: %v", w["deactivatedAt"])
	}
	if w := e.do("GET", "/api/WebhookRegistrations/"+id, nil).json(t); w["isActive"] != false {
		t.Fatalf("GET after DELETE: %v", w)
	}

	// A partial PUT changes only what it names; isActive true reactivates.
	r = e.do("PUT", "/api/WebhookRegistrations/"+id, `{"isActive": true, "callBackPassword": "new"}`)
	expect(t, r, http.StatusOK)
	w = r.json(t)
	if w["isActive"] != true || w["deactivatedAt"] != nil || w["requestId"] != "r" || w["callBackUserName"] != "u" {
		t.Fatalf("after reactivating PUT: %s", r.body)
	}
	sub, err := e.store.GetSubscription(context.Background(), id)
	if err != nil || sub.Password != "new" {
		t.Fatalf("password not updated: %+v %v", sub, err)
	}
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"callBackUrl": "ftp://x"}`), 400, "callBackUrl")
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"isActive": "yes"}`), 400, "isActive")
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/missing", `{"isActive": true}`), 404)
	expectProblem(t, e.do("DELETE", "/api/WebhookRegistrations/missing", nil), 404)
}

func TestFileOwnedSubscriptionsAreReadOnly(t *testing.T) {
	e := newEnv(t, nil)
	cfg := config.Default()
	cfg.Subscriptions = []config.Subscription{{ID: "billing", URL: "https://billing.example.com/hooks"}}
	if _, err := e.gw.SyncSubscriptions(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	w := e.do("GET", "/v1/webhooks/billing", nil).json(t)
	if w["source"] != "file" || w["url"] != "https://billing.example.com/hooks" {
		t.Fatalf("file subscription: %v", w)
	}
	expectProblem(t, e.do("PUT", "/v1/webhooks/billing", `{"url": "https://evil.example.com"}`), 409)
	expectProblem(t, e.do("DELETE", "/v1/webhooks/billing", nil), 409)
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/billing", `{"isActive": false}`), 409)
	expectProblem(t, e.do("DELETE", "/api/WebhookRegistrations/billing", nil), 409)
	if w := e.do("GET", "/api/WebhookRegistrations/billing", nil).json(t); w["isActive"] != true || w["callBackUrl"] != "https://billing.example.com/hooks" {
		t.Fatalf("changed by a refused request: %v", w)
	}

	// The sync never touches API subscriptions, and refuses to take over their ids.
	id := e.do("POST", "/v1/webhooks", `{"url": "https://example.com"}`).json(t)["id"].(string)
	if _, err := e.gw.SyncSubscriptions(context.Background(), config.Default()); err != nil {
		t.Fatal(err)
	}
	expect(t, e.do("GET", "/v1/webhooks/"+id, nil), http.StatusOK)
	expectProblem(t, e.do("GET", "/v1/webhooks/billing", nil), 404)
	cfg.Subscriptions = []config.Subscription{{ID: id, URL: "https://evil.example.com"}}
	if _, err := e.gw.SyncSubscriptions(context.Background(), cfg); err == nil {
		t.Fatal("the sync took over an API subscription's id")
	}
	if w := e.do("GET", "/v1/webhooks/"+id, nil).json(t); w["url"] != "https://example.com" {
		t.Fatalf("API subscription changed by the sync: %v", w)
	}
}

func TestListPagination(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 5; i++ {
		e.clock.Set(start.Add(time.Duration(i) * time.Second))
		expect(t, e.do("POST", "/v1/webhooks", `{"url": "https://example.com"}`), 201)
	}
	var ids []string
	path := "/v1/webhooks?limit=2"
	for path != "" {
		r := e.do("GET", path, nil)
		expect(t, r, 200)
		for _, w := range r.list(t) {
			ids = append(ids, w["id"].(string))
		}
		path = ""
		if link := r.header.Get("Link"); link != "" {
			path = strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
		}
	}
	if len(ids) != 5 || ids[0] != "00000000-0000-4000-8000-000000000001" || ids[4] != "00000000-0000-4000-8000-000000000005" {
		t.Fatalf("paged ids %v", ids)
	}
	expectProblem(t, e.do("GET", "/v1/webhooks?limit=0", nil), 400, "limit")
	expectProblem(t, e.do("GET", "/api/WebhookRegistrations?limit=x", nil), 400, "limit")
	expectProblem(t, e.do("GET", "/v1/webhooks?after=nope", nil), 400, "after")
	if l := e.do("GET", "/v1/webhooks?limit=1000", nil).list(t); len(l) != 5 {
		t.Fatalf("full list %d", len(l))
	}
}

func TestUnknownRouteIsProblem(t *testing.T) {
	e := newEnv(t, nil)
	expectProblem(t, e.do("GET", "/v2/nothing", nil), 404)
}
