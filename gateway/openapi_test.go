package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	vconfig "github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store/sqlite"
)

// apiDoc is gateway/openapi.json, built as a 3.1 model, with a validator over it.
type apiDoc struct {
	model     *v3.Document
	validator validator.Validator
}

// loadAPIDoc builds raw as an OpenAPI 3.1 model, failing on any error, and checks it against
// the OpenAPI 3.1 schema with the validator.
func loadAPIDoc(t *testing.T, raw []byte) *apiDoc {
	t.Helper()
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("openapi.json is OpenAPI %q, want 3.1.0", v)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("openapi.json does not build as an OpenAPI 3 model: %v", err)
	}
	v, errs := validator.NewValidator(doc, vconfig.WithFormatAssertions())
	if len(errs) > 0 {
		t.Fatalf("openapi.json: validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("openapi.json is not a valid OpenAPI 3.1 document:\n%s", validationErrors(verrs))
	}
	return &apiDoc{model: &model.Model, validator: v}
}

func validationErrors(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  %s\n", e.Error())
	}
	return b.String()
}

// operation is a method on a path template of the document ("/v1/webhooks/{id}").
type operation struct{ method, path string }

func (o operation) String() string { return o.method + " " + o.path }

// operations lists the document's operations, each with the status codes it answers.
func (d *apiDoc) operations() map[operation][]string {
	ops := map[operation][]string{}
	for path, item := range d.model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			var codes []string
			for code := range op.Responses.Codes.KeysFromOldest() {
				codes = append(codes, code)
			}
			ops[operation{strings.ToUpper(method), path}] = codes
		}
	}
	return ops
}

// template returns the path template of the document that path matches.
func (d *apiDoc) template(path string) (string, bool) {
	segs := strings.Split(path, "/")
	for tmpl := range d.model.Paths.PathItems.KeysFromOldest() {
		tsegs := strings.Split(tmpl, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		match := true
		for i, ts := range tsegs {
			if !(strings.HasPrefix(ts, "{") && segs[i] != "") && ts != segs[i] {
				match = false
				break
			}
		}
		if match {
			return tmpl, true
		}
	}
	return "", false
}

// routeKey makes a Fiber route ("/v1/webhooks/:id") and a path template of the document
// ("/v1/webhooks/{id}") comparable, whatever the parameters' names.
var routeParam = regexp.MustCompile(`:[^/]+|\{[^}]+\}`)

func routeKey(method, path string) string {
	return method + " " + routeParam.ReplaceAllString(path, "{}")
}

// The document is valid OpenAPI 3.1, served as it is in the repository, on the management
// listener without a token.
func TestOpenAPIDocumentIsServed(t *testing.T) {
	file, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	loadAPIDoc(t, file)

	e := newEnv(t, func(c *config.Config) { c.Admin.Listen = "127.0.0.1:0" })
	r := e.doAs("", "GET", "/openapi.json", nil)
	expect(t, r, http.StatusNotFound) // the main listener serves ingest and the probes
	admin := &env{t: t, base: e.admin}
	r = admin.doAs("", "GET", "/openapi.json", nil)
	expect(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if !bytes.Equal(r.body, file) {
		t.Fatal("GET /openapi.json is not gateway/openapi.json")
	}
}

// Every route the gateway serves is in the document with its method, and every operation of
// the document is served; a method a path does not take answers 405 with an Allow header
// naming exactly the document's methods (and HEAD with GET), and a problem document.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	e := newEnv(t, nil)
	d := loadAPIDoc(t, e.doAs("", "GET", "/openapi.json", nil).body)

	documented := map[string]bool{}
	methods := map[string][]string{} // by path template
	for op := range d.operations() {
		documented[routeKey(op.method, op.path)] = true
		methods[op.path] = append(methods[op.path], op.method)
	}
	served := map[string]bool{}
	for _, rt := range e.gw.App().GetRoutes(true) {
		if rt.Method == http.MethodHead { // Fiber's twin of every GET route
			continue
		}
		key := routeKey(rt.Method, rt.Path)
		served[key] = true
		if !documented[key] {
			t.Errorf("%s %s is served but not in openapi.json", rt.Method, rt.Path)
		}
	}
	for key := range documented {
		if !served[key] {
			t.Errorf("%s is in openapi.json but not served", key)
		}
	}

	problem := d.model.Components.Schemas.GetOrZero("Problem").Schema()
	schemas := schema_validation.NewSchemaValidator()
	for path, ms := range methods {
		allow := slices.Clone(ms)
		if slices.Contains(allow, "GET") {
			allow = append(allow, "HEAD")
		}
		slices.Sort(allow)
		concrete := strings.NewReplacer("{id}", "x1", "{registrationId}", "x1").Replace(path)
		r := e.do("PATCH", concrete, nil)
		if r.status != http.StatusMethodNotAllowed {
			t.Errorf("PATCH %s: %d, want 405", concrete, r.status)
			continue
		}
		got := strings.Split(r.header.Get("Allow"), ", ")
		slices.Sort(got)
		if !slices.Equal(got, allow) {
			t.Errorf("PATCH %s: Allow %q; openapi.json has %s", concrete, r.header.Get("Allow"), strings.Join(allow, ", "))
		}
		if ok, errs := schemas.ValidateSchemaBytes(problem, r.body); !ok {
			t.Errorf("PATCH %s: the 405 is not a Problem:\n%s", concrete, validationErrors(errs))
		}
	}
}

const ingestToken = "test-ingest-token"

// apiCase is a real request to the gateway and the status it must get. Its path may name the
// state the test sets up: {webhook}, {event} and so on (see TestOpenAPIConformance).
type apiCase struct {
	name    string
	method  string
	path    string
	body    string
	header  map[string]string
	noToken bool
	status  int
	// invalid: the document refuses the request too (no token, a field the schema rules out);
	// otherwise it must accept it (the server refuses it for a reason a schema cannot say).
	invalid bool
	before  func(t *testing.T, e *env)
	after   func(t *testing.T, e *env)
}

// conformanceCases are the requests that produce every answer the document lists, but 500.
func conformanceCases() []apiCase {
	big := `{"url": "https://example.com/` + strings.Repeat("x", 70<<10) + `"}`
	br := map[string]string{"Content-Encoding": "br"}
	full := func(t *testing.T, e *env) {
		if _, err := e.store.(*sqlite.Store).SetMaxPageCount(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
	}
	room := func(t *testing.T, e *env) {
		if _, err := e.store.(*sqlite.Store).SetMaxPageCount(context.Background(), 1<<30); err != nil {
			t.Fatal(err)
		}
		eventually(t, "ready with room again", func() bool { return e.doAs("", "GET", "/readyz", nil).status == http.StatusOK })
	}
	cases := []apiCase{
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "readyz", method: "GET", path: "/readyz", status: 200},
		{name: "readyz, disk full", method: "GET", path: "/readyz", status: 503, before: func(t *testing.T, e *env) {
			full(t, e)
			expect(t, e.doAs(ingestToken, "POST", "/v1/events", bigEvent("c-full-0")), http.StatusServiceUnavailable)
		}, after: room},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
		{name: "openapi", method: "GET", path: "/openapi.json", status: 200},
		{name: "console", method: "GET", path: "/console", status: 200},
		{name: "console script", method: "GET", path: "/console/console.js?v=1", status: 200},
		{name: "console style", method: "GET", path: "/console/console.css", status: 200},
		{name: "console, no such file", method: "GET", path: "/console/nope.js", status: 404},

		{name: "ingest one", method: "POST", path: "/v1/events", body: `{"id": "c-1", "type": "transaction.state.updated", "transaction": {"id": "t1"}}`, status: 202},
		{name: "ingest a duplicate", method: "POST", path: "/v1/events", body: `{"id": "c-1", "type": "transaction.state.updated"}`, status: 202},
		{name: "ingest a batch", method: "POST", path: "/v1/events", body: `[{"type": "task.state.updated"}, {"id": "c-2", "type": "transaction.state.updated", "created": "2026-03-04T05:06:07Z"}]`, status: 202},
		{name: "ingest malformed", method: "POST", path: "/v1/events", body: `{"type": `, status: 400, invalid: true},
		{name: "ingest without type", method: "POST", path: "/v1/events", body: `[{"id": "c-3"}]`, status: 400, invalid: true},
		{name: "ingest null created", method: "POST", path: "/v1/events", body: `{"type": "task.state.updated", "created": null}`, status: 400, invalid: true},
		{name: "ingest without token", method: "POST", path: "/v1/events", body: `{"type": "task.state.updated"}`, noToken: true, status: 401},
		{name: "ingest too large", method: "POST", path: "/v1/events", body: `{"type": "task.state.updated", "pad": "` + strings.Repeat("x", 100<<10) + `"}`, status: 413},
		{name: "ingest too many", method: "POST", path: "/v1/events", body: "[" + strings.Repeat(`{"type": "task.state.updated"},`, 1000) + `{"type": "task.state.updated"}]`, status: 413, invalid: true},
		{name: "ingest brotli", method: "POST", path: "/v1/events", body: `{"type": "task.state.updated"}`, header: br, status: 415},
		{name: "ingest unknown type", method: "POST", path: "/v1/events", body: `{"type": "nope"}`, status: 422},
		{name: "ingest, disk full", method: "POST", path: "/v1/events", body: bigEvent("c-full"), status: 503, before: full, after: room},

		{name: "get event", method: "GET", path: "/v1/events/{event}", status: 200},
		{name: "get event without token", method: "GET", path: "/v1/events/{event}", noToken: true, status: 401, invalid: true},
		{name: "get unknown event", method: "GET", path: "/v1/events/nope", status: 404},
		{name: "replay", method: "POST", path: "/v1/events/{event}/replay", body: `{"subscription": "{webhook}"}`, status: 202},
		{name: "replay without subscription", method: "POST", path: "/v1/events/{event}/replay", body: `{}`, status: 400, invalid: true},
		{name: "replay unknown field", method: "POST", path: "/v1/events/{event}/replay", body: `{"subscription": "{webhook}", "x": 1}`, status: 400, invalid: true},
		{name: "replay without token", method: "POST", path: "/v1/events/{event}/replay", body: `{"subscription": "{webhook}"}`, noToken: true, status: 401, invalid: true},
		{name: "replay unknown event", method: "POST", path: "/v1/events/nope/replay", body: `{"subscription": "{webhook}"}`, status: 404},
		{name: "replay to an inactive one", method: "POST", path: "/v1/events/{event}/replay", body: `{"subscription": "{inactive}"}`, status: 409},
		{name: "replay too large", method: "POST", path: "/v1/events/{event}/replay", body: big, status: 413, invalid: true},
		{name: "replay brotli", method: "POST", path: "/v1/events/{event}/replay", body: `{"subscription": "{webhook}"}`, header: br, status: 415},

		{name: "list deliveries", method: "GET", path: "/v1/deliveries", status: 200},
		{name: "list deliveries filtered", method: "GET", path: "/v1/deliveries?status=pending&subscription={webhook}&event_type=transaction.state.updated&since=2h&until=2030-01-01T00:00:00Z&limit=1", status: 200},
		{name: "list deliveries, bad limit", method: "GET", path: "/v1/deliveries?limit=0", status: 400, invalid: true},
		{name: "list deliveries, bad since", method: "GET", path: "/v1/deliveries?since=yesterday&event_type=nope", status: 400},
		{name: "list deliveries without token", method: "GET", path: "/v1/deliveries", noToken: true, status: 401, invalid: true},
		{name: "stats", method: "GET", path: "/v1/stats", status: 200},
		{name: "stats without token", method: "GET", path: "/v1/stats", noToken: true, status: 401, invalid: true},
		{name: "get delivery", method: "GET", path: "/v1/deliveries/{delivery}", status: 200},
		{name: "get delivery without token", method: "GET", path: "/v1/deliveries/{delivery}", noToken: true, status: 401, invalid: true},
		{name: "get unknown delivery", method: "GET", path: "/v1/deliveries/nope", status: 404},
		{name: "retry", method: "POST", path: "/v1/deliveries/{delivery}/retry", status: 202},
		{name: "retry without token", method: "POST", path: "/v1/deliveries/{delivery}/retry", noToken: true, status: 401, invalid: true},
		{name: "retry unknown", method: "POST", path: "/v1/deliveries/nope/retry", status: 404},
		{name: "retry, subscription deleted", method: "POST", path: "/v1/deliveries/{orphan}/retry", status: 409},

		{name: "create registration", method: "POST", path: "/api/WebhookRegistrations", body: `{"requestId": "R1", "callBackUrl": "{url}", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "m1", "deliveryPolicy": {"maxInFlight": 2, "rateLimit": 0.5}}`, status: 201},
		{name: "create registration, missing fields", method: "POST", path: "/api/WebhookRegistrations", body: `{"requestId": "R1"}`, status: 400, invalid: true},
		{name: "create registration, bad url", method: "POST", path: "/api/WebhookRegistrations", body: `{"requestId": "R1", "callBackUrl": "ftp://x", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "m1"}`, status: 400},
		{name: "create registration without token", method: "POST", path: "/api/WebhookRegistrations", body: `{}`, noToken: true, status: 401, invalid: true},
		{name: "create registration too large", method: "POST", path: "/api/WebhookRegistrations", body: big, status: 413, invalid: true},
		{name: "create registration brotli", method: "POST", path: "/api/WebhookRegistrations", body: `{}`, header: br, status: 415, invalid: true},
		{name: "list registrations", method: "GET", path: "/api/WebhookRegistrations?limit=2", status: 200},
		{name: "list registrations, bad after", method: "GET", path: "/api/WebhookRegistrations?after=nope", status: 400},
		{name: "list registrations without token", method: "GET", path: "/api/WebhookRegistrations", noToken: true, status: 401, invalid: true},
		{name: "get registration", method: "GET", path: "/api/WebhookRegistrations/{registration}", status: 200},
		{name: "get a webhook as a registration", method: "GET", path: "/api/WebhookRegistrations/{webhook}", status: 200},
		{name: "get registration without token", method: "GET", path: "/api/WebhookRegistrations/{registration}", noToken: true, status: 401, invalid: true},
		{name: "get unknown registration", method: "GET", path: "/api/WebhookRegistrations/nope", status: 404},
		{name: "update registration", method: "PUT", path: "/api/WebhookRegistrations/{registration}", body: `{"callBackPassword": "q", "isActive": true, "deliveryPolicy": {"ordering": "fifo", "maxInFlight": null}}`, status: 200},
		{name: "update registration, bad field", method: "PUT", path: "/api/WebhookRegistrations/{registration}", body: `{"callBackUserName": "a:b"}`, status: 400, invalid: true},
		{name: "update registration, wrong type", method: "PUT", path: "/api/WebhookRegistrations/{registration}", body: `{"isActive": "yes"}`, status: 400, invalid: true},
		{name: "update registration without token", method: "PUT", path: "/api/WebhookRegistrations/{registration}", body: `{}`, noToken: true, status: 401, invalid: true},
		{name: "update unknown registration", method: "PUT", path: "/api/WebhookRegistrations/nope", body: `{}`, status: 404},
		{name: "update declared registration", method: "PUT", path: "/api/WebhookRegistrations/{declared}", body: `{}`, status: 409},
		{name: "update registration too large", method: "PUT", path: "/api/WebhookRegistrations/{registration}", body: big, status: 413, invalid: true},
		{name: "update registration brotli", method: "PUT", path: "/api/WebhookRegistrations/{registration}", body: `{}`, header: br, status: 415},
		{name: "deactivate registration", method: "DELETE", path: "/api/WebhookRegistrations/{registration}", status: 200},
		{name: "deactivate registration without token", method: "DELETE", path: "/api/WebhookRegistrations/{registration}", noToken: true, status: 401, invalid: true},
		{name: "deactivate unknown registration", method: "DELETE", path: "/api/WebhookRegistrations/nope", status: 404},
		{name: "deactivate declared registration", method: "DELETE", path: "/api/WebhookRegistrations/{declared}", status: 409},
	}
	// The operations routes under every prefix that serves them.
	for _, prefix := range []string{"/v1/webhooks", "/id-scan/v1/webhooks", "/api/WebhookRegistrations"} {
		sub := "{webhook}"
		if prefix == "/api/WebhookRegistrations" {
			sub = "{registration}"
		}
		cases = append(cases,
			apiCase{name: "recover", method: "POST", path: prefix + "/" + sub + "/recover", body: `{"since": "2026-03-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"}`, status: 202},
			apiCase{name: "recover from a day ago", method: "POST", path: prefix + "/" + sub + "/recover", body: `{"since": "1d", "until": null}`, status: 202},
			apiCase{name: "recover without since", method: "POST", path: prefix + "/" + sub + "/recover", body: `{"until": "1h"}`, status: 400, invalid: true},
			apiCase{name: "recover, bad since", method: "POST", path: prefix + "/" + sub + "/recover", body: `{"since": "yesterday"}`, status: 400},
			apiCase{name: "recover without token", method: "POST", path: prefix + "/" + sub + "/recover", body: `{"since": "1d"}`, noToken: true, status: 401, invalid: true},
			apiCase{name: "recover unknown", method: "POST", path: prefix + "/nope/recover", body: `{"since": "1d"}`, status: 404},
			apiCase{name: "recover too large", method: "POST", path: prefix + "/" + sub + "/recover", body: big, status: 413, invalid: true},
			apiCase{name: "recover brotli", method: "POST", path: prefix + "/" + sub + "/recover", body: `{"since": "1d"}`, header: br, status: 415},
			apiCase{name: "test", method: "POST", path: prefix + "/" + sub + "/test", body: `{"type": "transaction.state.updated"}`, status: 200},
			apiCase{name: "test without a body", method: "POST", path: prefix + "/" + sub + "/test", status: 200},
			apiCase{name: "test a failing target", method: "POST", path: prefix + "/{failing}/test", body: `{"eventType": "task.state.updated"}`, status: 200},
			apiCase{name: "test, unknown type", method: "POST", path: prefix + "/" + sub + "/test", body: `{"type": "nope"}`, status: 400},
			apiCase{name: "test, unknown field", method: "POST", path: prefix + "/" + sub + "/test", body: `{"kind": "x"}`, status: 400, invalid: true},
			apiCase{name: "test without token", method: "POST", path: prefix + "/" + sub + "/test", noToken: true, status: 401, invalid: true},
			apiCase{name: "test unknown", method: "POST", path: prefix + "/nope/test", status: 404},
			apiCase{name: "test too large", method: "POST", path: prefix + "/" + sub + "/test", body: big, status: 413, invalid: true},
			apiCase{name: "test brotli", method: "POST", path: prefix + "/" + sub + "/test", body: `{}`, header: br, status: 415},
		)
	}
	// Dialect 1, under both of its prefixes.
	for i, prefix := range []string{"/v1/webhooks", "/id-scan/v1/webhooks"} {
		doomed := fmt.Sprintf("{doomed%d}", i)
		cases = append(cases,
			apiCase{name: "create webhook", method: "POST", path: prefix, body: `{"url": "{url}", "events": ["task.state.updated"], "headers": {"X-Team": "a"}, "plugins": [{"name": "hmac", "config": {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}], "deliveryPolicy": {"maxInFlight": 4, "rateLimit": 50, "ordering": null}}`, status: 201},
			apiCase{name: "create webhook, defaults", method: "POST", path: prefix, body: `{"url": "{url}", "events": null, "headers": null, "plugins": null, "deliveryPolicy": null}`, status: 201},
			apiCase{name: "create webhook without url", method: "POST", path: prefix, body: `{"events": ["nope"]}`, status: 400, invalid: true},
			apiCase{name: "create webhook, unknown event", method: "POST", path: prefix, body: `{"url": "{url}", "events": ["nope"]}`, status: 400},
			apiCase{name: "create webhook, fifo with 4 in flight", method: "POST", path: prefix, body: `{"url": "{url}", "deliveryPolicy": {"maxInFlight": 4, "ordering": "fifo"}}`, status: 400},
			apiCase{name: "create webhook, unknown policy key", method: "POST", path: prefix, body: `{"url": "{url}", "deliveryPolicy": {"burst": 4}}`, status: 400, invalid: true},
			apiCase{name: "create webhook, empty body", method: "POST", path: prefix, status: 400, invalid: true},
			apiCase{name: "create webhook without token", method: "POST", path: prefix, body: `{"url": "{url}"}`, noToken: true, status: 401, invalid: true},
			apiCase{name: "create webhook too large", method: "POST", path: prefix, body: big, status: 413},
			apiCase{name: "create webhook brotli", method: "POST", path: prefix, body: `{"url": "{url}"}`, header: br, status: 415},
			apiCase{name: "list webhooks", method: "GET", path: prefix + "?limit=1", status: 200},
			apiCase{name: "list webhooks, bad limit", method: "GET", path: prefix + "?limit=x", status: 400, invalid: true},
			apiCase{name: "list webhooks without token", method: "GET", path: prefix, noToken: true, status: 401, invalid: true},
			apiCase{name: "get webhook", method: "GET", path: prefix + "/{webhook}", status: 200},
			apiCase{name: "get declared webhook", method: "GET", path: prefix + "/{declared}", status: 200},
			apiCase{name: "get registration as a webhook", method: "GET", path: prefix + "/{registration}", status: 200},
			apiCase{name: "get webhook without token", method: "GET", path: prefix + "/{webhook}", noToken: true, status: 401, invalid: true},
			apiCase{name: "get unknown webhook", method: "GET", path: prefix + "/nope", status: 404},
			apiCase{name: "replace webhook", method: "PUT", path: prefix + "/{webhook}", body: `{"url": "{url}", "events": ["transaction.state.updated"], "deliveryPolicy": {"ordering": "fifo"}}`, status: 200},
			apiCase{name: "replace webhook, bad header", method: "PUT", path: prefix + "/{webhook}", body: `{"url": "{url}", "headers": {"Authorization": "x"}}`, status: 400},
			apiCase{name: "replace webhook, wrong type", method: "PUT", path: prefix + "/{webhook}", body: `{"url": 1}`, status: 400, invalid: true},
			apiCase{name: "replace webhook without token", method: "PUT", path: prefix + "/{webhook}", body: `{"url": "{url}"}`, noToken: true, status: 401, invalid: true},
			apiCase{name: "replace unknown webhook", method: "PUT", path: prefix + "/nope", body: `{"url": "{url}"}`, status: 404},
			apiCase{name: "replace declared webhook", method: "PUT", path: prefix + "/{declared}", body: `{"url": "{url}"}`, status: 409},
			apiCase{name: "replace webhook too large", method: "PUT", path: prefix + "/{webhook}", body: big, status: 413},
			apiCase{name: "replace webhook brotli", method: "PUT", path: prefix + "/{webhook}", body: `{"url": "{url}"}`, header: br, status: 415},
			apiCase{name: "delete webhook", method: "DELETE", path: prefix + "/" + doomed, status: 204},
			apiCase{name: "delete webhook without token", method: "DELETE", path: prefix + "/{webhook}", noToken: true, status: 401, invalid: true},
			apiCase{name: "delete unknown webhook", method: "DELETE", path: prefix + "/nope", status: 404},
			apiCase{name: "delete declared webhook", method: "DELETE", path: prefix + "/{declared}", status: 409},
			apiCase{name: "webhook deliveries", method: "GET", path: prefix + "/{webhook}/deliveries?status=succeeded&limit=1", status: 200},
			apiCase{name: "webhook deliveries, bad status", method: "GET", path: prefix + "/{webhook}/deliveries?status=lost", status: 400, invalid: true},
			apiCase{name: "webhook deliveries without token", method: "GET", path: prefix + "/{webhook}/deliveries", noToken: true, status: 401, invalid: true},
			apiCase{name: "unknown webhook's deliveries", method: "GET", path: prefix + "/nope/deliveries", status: 404},
			apiCase{name: "reactivate", method: "POST", path: prefix + "/{declared}/reactivate", status: 200},
			apiCase{name: "reactivate without token", method: "POST", path: prefix + "/{webhook}/reactivate", noToken: true, status: 401, invalid: true},
			apiCase{name: "reactivate unknown", method: "POST", path: prefix + "/nope/reactivate", status: 404},
		)
	}
	return cases
}

// Route by route, real requests get every answer the document lists (but 500), and the
// validator finds each request and response as the document says: a response that does not
// match its schema fails with the validator's message.
func TestOpenAPIConformance(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Ingest.Tokens = []string{ingestToken}
		c.Ingest.MaxBodyBytes = 96 << 10 // bodies over it are small enough to be sent whole before the 413
		c.Delivery.QuickRetries = 0
		c.Delivery.Schedule = nil // a failed attempt fails its delivery at once
	})
	d := loadAPIDoc(t, e.doAs("", "GET", "/openapi.json", nil).body)

	// The state the cases name.
	ok := newReceiver(t, nil)
	failing := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte("\xff\xfe not UTF-8"))
	})
	cfg := *e.cfg
	cfg.Subscriptions = []config.Subscription{{ID: "declared", URL: ok.URL}}
	if _, err := e.gw.SyncSubscriptions(context.Background(), &cfg); err != nil {
		t.Fatal(err)
	}
	state := map[string]string{"url": ok.URL, "declared": "declared"}
	state["webhook"] = e.subscribe(t, ok.URL, `, "events": ["transaction.state.updated"]`)
	state["failing"] = e.subscribe(t, failing.URL, "")
	state["doomed0"] = e.subscribe(t, ok.URL, "")
	state["doomed1"] = e.subscribe(t, ok.URL, "")
	orphaned := e.subscribe(t, failing.URL, "")
	reg := func() string {
		r := e.do("POST", "/api/WebhookRegistrations", `{"requestId": "R0", "callBackUrl": "`+ok.URL+`", "callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "m0"}`)
		expect(t, r, http.StatusCreated)
		return r.json(t)["registrationId"].(string)
	}
	state["registration"] = reg()
	state["inactive"] = reg()
	expect(t, e.do("DELETE", "/api/WebhookRegistrations/"+state["inactive"], nil), http.StatusOK)
	post := func(body string) {
		r := e.doAs(ingestToken, "POST", "/v1/events", body)
		expect(t, r, http.StatusAccepted)
	}
	post(`{"id": "evt-1", "type": "transaction.state.updated", "transaction": {"id": "t1", "state": "completed"}}`)
	state["event"] = "evt-1"
	eventually(t, "the deliveries finished", func() bool {
		return len(e.do("GET", "/v1/deliveries?status=pending", nil).list(t)) == 0
	})
	for _, dl := range e.eventDeliveries(t, "evt-1") {
		switch dl["subscriptionId"] {
		case state["webhook"]:
			state["delivery"] = dl["id"].(string)
		case orphaned:
			state["orphan"] = dl["id"].(string)
		}
	}
	expect(t, e.do("DELETE", "/v1/webhooks/"+orphaned, nil), http.StatusNoContent)
	var pairs []string
	for k, v := range state {
		pairs = append(pairs, "{"+k+"}", v)
	}
	fill := strings.NewReplacer(pairs...)

	covered := map[operation]map[string]bool{}
	for _, c := range conformanceCases() {
		path, body := fill.Replace(c.path), fill.Replace(c.body)
		tmpl, found := d.template(strings.SplitN(path, "?", 2)[0])
		if !found {
			t.Errorf("%s %s (%s): no path of openapi.json matches", c.method, path, c.name)
			continue
		}
		op := operation{c.method, tmpl}
		t.Run(op.String()+"/"+strconv.Itoa(c.status)+"/"+c.name, func(t *testing.T) {
			if c.before != nil {
				c.before(t, e)
			}
			if c.after != nil {
				defer c.after(t, e)
			}
			req := func() *http.Request {
				var r io.Reader
				if c.body != "" {
					r = strings.NewReader(body)
				}
				req, err := http.NewRequest(c.method, e.base+path, r)
				if err != nil {
					t.Fatal(err)
				}
				if c.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				for k, v := range c.header {
					req.Header.Set(k, v)
				}
				switch {
				case c.noToken:
				case tmpl == "/v1/events":
					req.Header.Set("Authorization", "Bearer "+ingestToken)
				case strings.HasPrefix(tmpl, "/v1/") || strings.HasPrefix(tmpl, "/id-scan/") || strings.HasPrefix(tmpl, "/api/"):
					req.Header.Set("Authorization", "Bearer "+adminToken)
				}
				return req
			}
			resp, err := http.DefaultClient.Do(req())
			if err != nil {
				t.Fatal(err)
			}
			respBody, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d\n%.2000s", resp.StatusCode, c.status, respBody)
			}
			if valid, errs := d.validator.ValidateHttpRequest(req()); valid == c.invalid {
				if c.invalid {
					t.Errorf("openapi.json accepts the request, which the server refuses with %d:\n%.2000s", c.status, respBody)
				} else {
					t.Errorf("openapi.json refuses the request:\n%s", validationErrors(errs))
				}
			}
			resp.Body = io.NopCloser(bytes.NewReader(respBody))
			if valid, errs := d.validator.ValidateHttpResponse(req(), resp); !valid {
				t.Errorf("the response does not match openapi.json:\n%s\n%.2000s", validationErrors(errs), respBody)
			}
		})
		if covered[op] == nil {
			covered[op] = map[string]bool{}
		}
		covered[op][strconv.Itoa(c.status)] = true
	}

	// Every answer the document lists has a case, so that a new route, or a new answer, needs one.
	ops := d.operations()
	for _, op := range slices.SortedFunc(maps.Keys(ops), func(a, b operation) int { return strings.Compare(a.String(), b.String()) }) {
		for _, code := range ops[op] {
			if code != "500" && !covered[op][code] {
				t.Errorf("%s: no case gets its %s", op, code)
			}
		}
	}
}
