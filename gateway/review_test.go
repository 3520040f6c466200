package gateway_test

import (
	"context"
	"net/http"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/basicauth"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
)

// storedPluginConfig decodes the config of a subscription's first plugin as its factory would.
func storedPluginConfig(t *testing.T, e *env, id string, out any) {
	t.Helper()
	sub, err := e.store.GetSubscription(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(sub.Plugins[0].Config), &n); err != nil {
		t.Fatal(err)
	}
	if err := config.DecodeStrict(&n, out); err != nil {
		t.Fatal(err)
	}
}

// Plugin secrets reach the store exactly as written, whether they look like numbers or not.
func TestPluginSecretsKeepTheirText(t *testing.T) {
	e := newEnv(t, nil)
	cfg, err := config.Parse([]byte(`
subscriptions:
  - id: declared
    url: https://example.com
    plugins:
      - name: basic-auth
        config:
          username: "${USER_NAME}"
          password: ${PW}
`), func(k string) (string, bool) {
		return map[string]string{"USER_NAME": "0x10", "PW": "0123"}[k], true
	}, builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.gw.SyncSubscriptions(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	var got basicauth.Config
	storedPluginConfig(t, e, "declared", &got)
	if got.Username != "0x10" || got.Password != "0123" {
		t.Fatalf("from the file: %+v", got)
	}

	r := e.do("POST", "/v1/webhooks", `{"url": "https://example.com", "plugins": [{"name": "basic-auth",
		"config": {"username": "\ud83d\ude00", "password": 12345678901234567890123}}]}`)
	expect(t, r, http.StatusCreated)
	storedPluginConfig(t, e, r.json(t)["id"].(string), &got)
	if got.Username != "😀" || got.Password != "12345678901234567890123" {
		t.Fatalf("from the API: %+v", got)
	}
}

// A registration replaced through dialect 1 without events keeps receiving every type.
func TestCrossDialectUpdates(t *testing.T) {
	e := newEnv(t, nil)
	id := e.do("POST", "/api/WebhookRegistrations", `{"requestId":"r","callBackUrl":"https://example.com","callBackUserName":"u","callBackPassword":"p","sourceSenderId":"s"}`).json(t)["registrationId"].(string)
	expect(t, e.do("PUT", "/v1/webhooks/"+id, `{"url": "https://example.org"}`), http.StatusOK)
	sub, _ := e.store.GetSubscription(context.Background(), id)
	if len(sub.Events) != 1 || sub.Events[0] != store.AllEvents || sub.Username != "u" {
		t.Fatalf("after a dialect-1 PUT: events %v, user %q", sub.Events, sub.Username)
	}
	expect(t, e.do("PUT", "/v1/webhooks/"+id, `{"url": "https://example.org", "events": ["task.state.updated"]}`), http.StatusOK)
	sub, _ = e.store.GetSubscription(context.Background(), id)
	if len(sub.Events) != 1 || sub.Events[0] != "task.state.updated" {
		t.Fatalf("events named in a PUT: %v", sub.Events)
	}
}

func TestTrailingDataAndCredentialHeadersRefused(t *testing.T) {
	e := newEnv(t, nil)
	for _, body := range []string{`{"url":"https://a.example"}}`, `{"url":"https://a.example"}]`, `{"url":"https://a.example"} 1`} {
		expectProblem(t, e.do("POST", "/v1/webhooks", body), 400)
	}
	for _, h := range []string{"Authorization", "proxy-authorization", "Cookie"} {
		expectProblem(t, e.do("POST", "/v1/webhooks", `{"url":"https://a.example","headers":{"`+h+`":"x"}}`), 400, "headers."+h)
	}
	// The headers plugin may carry them: its config is never shown.
	expect(t, e.do("POST", "/v1/webhooks", `{"url":"https://a.example","plugins":[{"name":"headers","config":{"Authorization":"Token x"}}]}`), 201)
	if e.count() != 1 {
		t.Fatal("bad input stored")
	}
}

func TestConflictComesBeforeBodyProblems(t *testing.T) {
	e := newEnv(t, nil)
	cfg := config.Default()
	cfg.Subscriptions = []config.Subscription{{ID: "declared", URL: "https://example.com"}}
	if _, err := e.gw.SyncSubscriptions(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	expectProblem(t, e.do("PUT", "/v1/webhooks/declared", `{"bogus": 1}`), 409)
	expectProblem(t, e.do("PUT", "/api/WebhookRegistrations/declared", `not json`), 409)
	if err := e.store.DeleteSubscription(context.Background(), "declared", e.clock.Now()); err == nil {
		t.Fatal("the store deleted a declared subscription for the API")
	}
}

func TestLocationWithTrailingSlash(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("POST", "/v1/webhooks/", `{"url":"https://a.example"}`)
	expect(t, r, 201)
	if loc := r.header.Get("Location"); loc != "/v1/webhooks/"+r.json(t)["id"].(string) {
		t.Fatalf("Location %q", loc)
	}
}
