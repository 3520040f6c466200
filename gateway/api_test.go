package gateway_test

import (
	"bytes"
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
	"github.com/webhookgw/gateway/store"
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
		"subMerchantId", "merchantId", "isActive", "deactivatedAt", "isInErrorState", "errorStateReason", "detectedErrorStateAt",
		"deliveryPolicy"} // the seed's fields, then the gateway's extension
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

// defaultPolicy is deliveryPolicy as a response shows a subscription that sets none.
const defaultPolicy = `{"maxInFlight":null,"rateLimit":null,"ordering":null}`

// policyOf returns the deliveryPolicy of a response as compact JSON.
func policyOf(t *testing.T, r response) string {
	t.Helper()
	var v struct {
		DeliveryPolicy json.RawMessage `json:"deliveryPolicy"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil || v.DeliveryPolicy == nil {
		t.Fatalf("no deliveryPolicy (%v): %s", err, r.body)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v.DeliveryPolicy); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// storedPolicy returns the policy the store holds for id.
func (e *env) storedPolicy(t *testing.T, id string) store.Policy {
	t.Helper()
	sub, err := e.store.GetSubscription(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return sub.Policy
}

func TestWebhookDeliveryPolicy(t *testing.T) {
	e := newEnv(t, nil)
	// Without one: every key shown, null.
	r := e.do("POST", "/v1/webhooks", `{"url": "https://example.com"}`)
	expect(t, r, http.StatusCreated)
	if got := policyOf(t, r); got != defaultPolicy {
		t.Errorf("default deliveryPolicy %s, want %s", got, defaultPolicy)
	}

	r = e.do("POST", "/v1/webhooks", `{"url": "https://example.com", "plugins": [{"name": "bearer", "config": {"token": "t"}}],
		"deliveryPolicy": {"maxInFlight": 16, "rateLimit": 0.5}}`)
	expect(t, r, http.StatusCreated)
	got := keys(t, r.body)
	if strings.Join(got[:8], ",") != "id,url,events,headers,updatedAt,createdAt,plugins,deliveryPolicy" {
		t.Errorf("fields %v: the seed's first, then plugins and deliveryPolicy", got)
	}
	if p := policyOf(t, r); p != `{"maxInFlight":16,"rateLimit":0.5,"ordering":null}` {
		t.Errorf("deliveryPolicy %s", p)
	}
	id := r.json(t)["id"].(string)
	if p := e.storedPolicy(t, id); p != (store.Policy{MaxInFlight: 16, RateLimit: 0.5}) {
		t.Errorf("stored %+v", p)
	}
	if p := policyOf(t, e.do("GET", "/v1/webhooks/"+id, nil)); p != `{"maxInFlight":16,"rateLimit":0.5,"ordering":null}` {
		t.Errorf("GET deliveryPolicy %s", p)
	}
	// Dialect 2 shows the same policy.
	if p := policyOf(t, e.do("GET", "/api/WebhookRegistrations/"+id, nil)); p != `{"maxInFlight":16,"rateLimit":0.5,"ordering":null}` {
		t.Errorf("dialect 2 deliveryPolicy %s", p)
	}

	// PUT replaces the policy as it replaces the other fields: what it leaves out is the default.
	r = e.do("PUT", "/v1/webhooks/"+id, `{"url": "https://example.com", "deliveryPolicy": {"ordering": "fifo"}}`)
	expect(t, r, http.StatusOK)
	if p := policyOf(t, r); p != `{"maxInFlight":null,"rateLimit":null,"ordering":"fifo"}` {
		t.Errorf("after PUT with ordering only: %s", p)
	}
	if p := e.storedPolicy(t, id); p != (store.Policy{Ordering: store.FIFO}) {
		t.Errorf("stored after PUT %+v", p)
	}
	// A response's deliveryPolicy can be sent back as it is.
	r = e.do("PUT", "/v1/webhooks/"+id, `{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": 1, "rateLimit": 50, "ordering": "fifo"}}`)
	expect(t, r, http.StatusOK)
	back := policyOf(t, r)
	r = e.do("PUT", "/v1/webhooks/"+id, `{"url": "https://example.com", "deliveryPolicy": `+back+`}`)
	expect(t, r, http.StatusOK)
	if policyOf(t, r) != back || back != `{"maxInFlight":1,"rateLimit":50,"ordering":"fifo"}` {
		t.Errorf("round trip: %s, then %s", back, policyOf(t, r))
	}
	for _, body := range []string{`{"url": "https://example.com"}`, `{"url": "https://example.com", "deliveryPolicy": null}`,
		`{"url": "https://example.com", "deliveryPolicy": {}}`,
		`{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": null, "rateLimit": null, "ordering": null}}`,
		`{"url": "https://example.com", "deliveryPolicy": {"ordering": ""}}`} {
		e.do("PUT", "/v1/webhooks/"+id, `{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": 3, "rateLimit": 7}}`)
		r = e.do("PUT", "/v1/webhooks/"+id, body)
		expect(t, r, http.StatusOK)
		if policyOf(t, r) != defaultPolicy {
			t.Errorf("PUT %s: %s, want the default", body, policyOf(t, r))
		}
		if p := e.storedPolicy(t, id); p != (store.Policy{}) {
			t.Errorf("PUT %s: stored %+v", body, p)
		}
	}
}

func TestRegistrationDeliveryPolicy(t *testing.T) {
	e := newEnv(t, nil)
	const reg = `"requestId":"r","callBackUrl":"https://example.com","callBackUserName":"u","callBackPassword":"p","sourceSenderId":"s"`
	r := e.do("POST", "/api/WebhookRegistrations", `{`+reg+`, "deliveryPolicy": {"maxInFlight": 16, "rateLimit": 50}}`)
	expect(t, r, http.StatusCreated)
	if p := policyOf(t, r); p != `{"maxInFlight":16,"rateLimit":50,"ordering":null}` {
		t.Fatalf("created with %s", p)
	}
	id := r.json(t)["registrationId"].(string)
	if p := policyOf(t, e.do("GET", "/api/WebhookRegistrations/"+id, nil)); p != `{"maxInFlight":16,"rateLimit":50,"ordering":null}` {
		t.Errorf("GET %s", p)
	}
	if p := policyOf(t, e.do("GET", "/v1/webhooks/"+id, nil)); p != `{"maxInFlight":16,"rateLimit":50,"ordering":null}` {
		t.Errorf("dialect 1 GET %s", p)
	}
	if got := policyOf(t, e.do("POST", "/api/WebhookRegistrations", `{`+reg+`}`)); got != defaultPolicy {
		t.Errorf("registration without a policy: %s", got)
	}

	// PUT changes only what it sends: keys left out keep their value, null ones go back to
	// the default, and deliveryPolicy null resets them all.
	steps := []struct{ body, want string }{
		{`{"isActive": true}`, `{"maxInFlight":16,"rateLimit":50,"ordering":null}`},
		{`{"deliveryPolicy": {}}`, `{"maxInFlight":16,"rateLimit":50,"ordering":null}`},
		{`{"deliveryPolicy": {"rateLimit": 2.5}}`, `{"maxInFlight":16,"rateLimit":2.5,"ordering":null}`},
		{`{"deliveryPolicy": {"maxInFlight": null, "ordering": "fifo"}}`, `{"maxInFlight":null,"rateLimit":2.5,"ordering":"fifo"}`},
		{`{"callBackPassword": "new"}`, `{"maxInFlight":null,"rateLimit":2.5,"ordering":"fifo"}`},
		{`{"deliveryPolicy": {"maxInFlight": 1}}`, `{"maxInFlight":1,"rateLimit":2.5,"ordering":"fifo"}`},
		{`{"deliveryPolicy": {"ordering": null, "maxInFlight": 8}}`, `{"maxInFlight":8,"rateLimit":2.5,"ordering":null}`},
		{`{"deliveryPolicy": null}`, defaultPolicy},
	}
	for _, s := range steps {
		r := e.do("PUT", "/api/WebhookRegistrations/"+id, s.body)
		expect(t, r, http.StatusOK)
		if got := policyOf(t, r); got != s.want {
			t.Fatalf("PUT %s: %s, want %s", s.body, got, s.want)
		}
		if got := policyOf(t, e.do("GET", "/api/WebhookRegistrations/"+id, nil)); got != s.want {
			t.Fatalf("GET after PUT %s: %s, want %s", s.body, got, s.want)
		}
	}

	// fifo is checked against what the registration already has: maxInFlight 8 stays.
	e.do("PUT", "/api/WebhookRegistrations/"+id, `{"deliveryPolicy": {"maxInFlight": 8}}`)
	p := expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"deliveryPolicy": {"ordering": "fifo"}}`), 400, "deliveryPolicy.maxInFlight")
	if msg := p["errors"].([]any)[0].(map[string]any)["message"].(string); !strings.Contains(msg, "one at a time") || !strings.Contains(msg, "8") {
		t.Errorf("fifo with maxInFlight 8: %q", msg)
	}
	// A refused PUT changes nothing, the other fields it sends included.
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"callBackUserName": "other", "deliveryPolicy": {"rateLimit": 0}}`), 400, "deliveryPolicy.rateLimit")
	if got, err := e.store.GetSubscription(context.Background(), id); err != nil || got.Policy != (store.Policy{MaxInFlight: 8}) || got.Username != "u" {
		t.Fatalf("changed by refused PUTs: %+v %v", got, err)
	}
}

// Bad policies are refused in both dialects, each field named, nothing stored. maxInFlight is
// bounded by the running configuration's delivery.max_in_flight.
func TestDeliveryPolicyBadInput(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Delivery.MaxInFlight, c.Delivery.MaxInFlightPerSubscription = 64, 8 })
	cases := []struct {
		name, policy string
		fields       []string
		message      string
	}{
		{"maxInFlight 0", `{"maxInFlight": 0}`, []string{"deliveryPolicy.maxInFlight"}, "from 1 to 64"},
		{"maxInFlight over delivery.max_in_flight", `{"maxInFlight": 65}`, []string{"deliveryPolicy.maxInFlight"}, "from 1 to 64"},
		{"maxInFlight negative", `{"maxInFlight": -1}`, []string{"deliveryPolicy.maxInFlight"}, "from 1 to 64"},
		{"maxInFlight fraction", `{"maxInFlight": 1.5}`, []string{"deliveryPolicy.maxInFlight"}, "whole number"},
		{"maxInFlight huge", `{"maxInFlight": 1e30}`, []string{"deliveryPolicy.maxInFlight"}, "whole number"},
		{"maxInFlight string", `{"maxInFlight": "16"}`, []string{"deliveryPolicy.maxInFlight"}, "whole number"},
		{"rateLimit 0", `{"rateLimit": 0}`, []string{"deliveryPolicy.rateLimit"}, "more than 0"},
		{"rateLimit negative", `{"rateLimit": -2}`, []string{"deliveryPolicy.rateLimit"}, "more than 0"},
		{"rateLimit too high", `{"rateLimit": 100001}`, []string{"deliveryPolicy.rateLimit"}, "at most 100000"},
		{"rateLimit out of range", `{"rateLimit": 1e400}`, []string{"deliveryPolicy.rateLimit"}, "a number"},
		{"rateLimit string", `{"rateLimit": "fast"}`, []string{"deliveryPolicy.rateLimit"}, "a number"},
		{"ordering unknown", `{"ordering": "lifo"}`, []string{"deliveryPolicy.ordering"}, `"fifo" or null`},
		{"ordering case", `{"ordering": "FIFO"}`, []string{"deliveryPolicy.ordering"}, `"fifo" or null`},
		{"ordering not a string", `{"ordering": true}`, []string{"deliveryPolicy.ordering"}, `"fifo" or null`},
		{"fifo with maxInFlight 2", `{"ordering": "fifo", "maxInFlight": 2}`, []string{"deliveryPolicy.maxInFlight"}, "one at a time"},
		{"unknown key", `{"maxInFlight": 2, "burst": 10}`, []string{"deliveryPolicy.burst"}, "unknown field"},
		{"not an object", `"fast"`, []string{"deliveryPolicy"}, "an object"},
		{"an array", `[16]`, []string{"deliveryPolicy"}, "an object"},
		{"all three wrong", `{"maxInFlight": 0, "rateLimit": 0, "ordering": "x"}`,
			[]string{"deliveryPolicy.maxInFlight", "deliveryPolicy.rateLimit", "deliveryPolicy.ordering"}, ""},
	}
	const reg = `"requestId":"r","callBackUrl":"https://example.com","callBackUserName":"u","callBackPassword":"p","sourceSenderId":"s"`
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, post := range []struct{ path, body string }{
				{"/v1/webhooks", `{"url": "https://example.com", "deliveryPolicy": ` + tc.policy + `}`},
				{"/api/WebhookRegistrations", `{` + reg + `, "deliveryPolicy": ` + tc.policy + `}`},
			} {
				p := expectProblem(t, e.do("POST", post.path, post.body), 400, tc.fields...)
				errs := p["errors"].([]any)
				if len(errs) != len(tc.fields) {
					t.Errorf("%s: %d errors, want %d: %v", post.path, len(errs), len(tc.fields), errs)
				}
				if msg := errs[0].(map[string]any)["message"].(string); !strings.Contains(msg, tc.message) {
					t.Errorf("%s: message %q lacks %q", post.path, msg, tc.message)
				}
			}
			if e.count() != 0 {
				t.Fatal("a bad policy was stored")
			}
		})
	}
	// Policy problems come with the request's other problems, in one answer.
	expectProblem(t, e.do("POST", "/v1/webhooks", `{"url": "http://example.com", "deliveryPolicy": {"rateLimit": -1}}`), 400, "url", "deliveryPolicy.rateLimit")
	expectProblem(t, e.do("POST", "/api/WebhookRegistrations", `{"requestId": "r", "deliveryPolicy": {"ordering": "lifo"}}`), 400,
		"callBackUrl", "callBackUserName", "callBackPassword", "sourceSenderId", "deliveryPolicy.ordering")
	// At the bounds: accepted.
	expect(t, e.do("POST", "/v1/webhooks", `{"url": "https://example.com", "deliveryPolicy": {"maxInFlight": 64, "rateLimit": 100000}}`), 201)
	expect(t, e.do("POST", "/api/WebhookRegistrations", `{`+reg+`, "deliveryPolicy": {"maxInFlight": 1, "rateLimit": 0.001, "ordering": "fifo"}}`), 201)
}

// The file's max_in_flight, rate_limit and ordering land in the store's policy, and a changed
// policy updates the subscription at the next sync.
func TestSyncDeliveryPolicy(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	cfg := config.Default()
	n, rate := 16, 0.5
	cfg.Subscriptions = []config.Subscription{
		{ID: "billing", URL: "https://billing.example.com/hooks", MaxInFlight: &n, RateLimit: &rate},
		{ID: "ledger", URL: "https://ledger.example.com/hooks", Ordering: config.OrderingFIFO},
		{ID: "plain", URL: "https://plain.example.com/hooks"},
	}
	if err := cfg.Validate(builtin.Registry()); err != nil {
		t.Fatal(err)
	}
	if res, err := e.gw.SyncSubscriptions(ctx, cfg); err != nil || res.Created != 3 {
		t.Fatalf("%+v %v", res, err)
	}
	want := map[string]store.Policy{
		"billing": {MaxInFlight: 16, RateLimit: 0.5},
		"ledger":  {Ordering: store.FIFO},
		"plain":   {},
	}
	for id, p := range want {
		if got := e.storedPolicy(t, id); got != p {
			t.Errorf("%s: stored %+v, want %+v", id, got, p)
		}
	}
	if p := policyOf(t, e.do("GET", "/v1/webhooks/billing", nil)); p != `{"maxInFlight":16,"rateLimit":0.5,"ordering":null}` {
		t.Errorf("GET billing %s", p)
	}
	if p := policyOf(t, e.do("GET", "/api/WebhookRegistrations/ledger", nil)); p != `{"maxInFlight":null,"rateLimit":null,"ordering":"fifo"}` {
		t.Errorf("GET ledger %s", p)
	}
	before, err := e.store.GetSubscription(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}

	// The same file changes nothing; a changed policy (and only that) updates the subscription.
	if res, err := e.gw.SyncSubscriptions(ctx, cfg); err != nil || res != (store.SyncResult{}) {
		t.Fatalf("sync of the same file: %+v %v", res, err)
	}
	n2 := 4
	cfg.Subscriptions[0].MaxInFlight, cfg.Subscriptions[0].RateLimit = &n2, nil
	cfg.Subscriptions[1].Ordering = ""
	if res, err := e.gw.SyncSubscriptions(ctx, cfg); err != nil || res != (store.SyncResult{Updated: 2}) {
		t.Fatalf("sync of changed policies: %+v %v", res, err)
	}
	after, err := e.store.GetSubscription(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if after.Policy != (store.Policy{MaxInFlight: 4}) || after.Version <= before.Version {
		t.Errorf("billing after the change: policy %+v, version %d (was %d)", after.Policy, after.Version, before.Version)
	}
	if got := e.storedPolicy(t, "ledger"); got != (store.Policy{}) {
		t.Errorf("ledger after ordering was removed: %+v", got)
	}

	// A declared subscription's policy is the file's: the API answers 409 in both dialects.
	expectProblem(t, e.do("PUT", "/v1/webhooks/billing", `{"url": "https://billing.example.com/hooks", "deliveryPolicy": {"maxInFlight": 32}}`), 409)
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/billing", `{"deliveryPolicy": {"rateLimit": 1}}`), 409)
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/billing", `{"deliveryPolicy": null}`), 409)
	if got := e.storedPolicy(t, "billing"); got != (store.Policy{MaxInFlight: 4}) {
		t.Errorf("billing changed by refused PUTs: %+v", got)
	}
}
