package gateway_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// Every known route answers a method it does not take with 405, a problem document and an
// Allow header naming the methods it takes (GET routes take HEAD too); an unknown path is 404.
func TestWrongMethodIs405(t *testing.T) {
	e := newEnv(t, nil)
	type route struct {
		path  string
		allow []string // the methods it takes
	}
	routes := []route{
		{"/healthz", []string{"GET", "HEAD"}},
		{"/readyz", []string{"GET", "HEAD"}},
		{"/metrics", []string{"GET", "HEAD"}},
		{"/openapi.json", []string{"GET", "HEAD"}},
		{"/v1/events", []string{"POST"}},
		{"/v1/events/e1", []string{"GET", "HEAD"}},
		{"/v1/events/e1/replay", []string{"POST"}},
		{"/v1/deliveries", []string{"GET", "HEAD"}},
		{"/v1/deliveries/d1", []string{"GET", "HEAD"}},
		{"/v1/deliveries/d1/retry", []string{"POST"}},
		{"/api/WebhookRegistrations", []string{"GET", "HEAD", "POST"}},
		{"/api/WebhookRegistrations/r1", []string{"GET", "HEAD", "PUT", "DELETE"}},
		{"/api/WebhookRegistrations/r1/recover", []string{"POST"}},
		{"/api/WebhookRegistrations/r1/test", []string{"POST"}},
	}
	for _, prefix := range []string{"/v1/webhooks", "/id-scan/v1/webhooks"} {
		routes = append(routes,
			route{prefix, []string{"GET", "HEAD", "POST"}},
			route{prefix + "/w1", []string{"GET", "HEAD", "PUT", "DELETE"}},
			route{prefix + "/w1/deliveries", []string{"GET", "HEAD"}},
			route{prefix + "/w1/reactivate", []string{"POST"}},
			route{prefix + "/w1/recover", []string{"POST"}},
			route{prefix + "/w1/test", []string{"POST"}})
	}
	for _, rt := range routes {
		for _, method := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
			if slices.Contains(rt.allow, method) {
				continue
			}
			for _, token := range []string{adminToken, ""} { // the method is wrong either way
				r := e.doAs(token, method, rt.path, nil)
				if r.status != http.StatusMethodNotAllowed {
					t.Errorf("%s %s: %d, want 405\n%s", method, rt.path, r.status, r.body)
					continue
				}
				allow := strings.Split(r.header.Get("Allow"), ", ")
				slices.Sort(allow)
				want := slices.Sorted(slices.Values(rt.allow))
				if !slices.Equal(allow, want) {
					t.Errorf("%s %s: Allow %q, want %s", method, rt.path, r.header.Get("Allow"), strings.Join(rt.allow, ", "))
				}
				if method == "HEAD" {
					continue // no body to look at
				}
				if p := expectProblem(t, r, http.StatusMethodNotAllowed); !strings.Contains(p["detail"].(string), method+" is not allowed") {
					t.Errorf("%s %s: detail %q", method, rt.path, p["detail"])
				}
			}
		}
	}
	for _, path := range []string{"/", "/v1", "/v1/webhooks/w1/nope", "/api/webhookregistrations/r1/x", "/v2/events"} {
		expectProblem(t, e.do("GET", path, nil), http.StatusNotFound)
		expectProblem(t, e.do("PATCH", path, nil), http.StatusNotFound)
	}
}
