package gateway_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/webhookgw/gateway/config"
)

// The console's page and files are served with headers that confine them: a CSP that allows
// only their own script and style and calls to the gateway, no sniffing, no framing, no
// referrer; the page names its files with a version, with which they may be cached for good.
func TestConsoleHeaders(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Telemetry.Traces.UIURL = `http://jaeger.local:16686/trace/{trace_id}?x="><script>alert(1)</script>`
	})
	page := e.doAs("", "GET", "/console", nil)
	expect(t, page, http.StatusOK)
	confined := func(what string, h http.Header) {
		t.Helper()
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
			"frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: Content-Security-Policy %q lacks %s", what, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-") {
			t.Errorf("%s: Content-Security-Policy %q allows something unsafe", what, csp)
		}
		for name, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
			"Referrer-Policy": "no-referrer"} {
			if got := h.Get(name); got != want {
				t.Errorf("%s: %s %q, want %q", what, name, got, want)
			}
		}
	}
	confined("the page", page.header)
	if ct := page.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("the page's Content-Type %q", ct)
	}
	body := string(page.body)
	// The trace UI's address is escaped into an attribute; it cannot open an element.
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, `content="http://jaeger.local:16686/trace/{trace_id}?x=&#34;&gt;&lt;script&gt;`) {
		t.Errorf("the trace UI address is not escaped: %s", body)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || regexp.MustCompile(` on[a-z]+=`).MatchString(body) {
		t.Errorf("the page has inline script or style, which its CSP refuses: %s", body)
	}

	for _, file := range []struct{ name, contentType string }{
		{"console.js", "text/javascript; charset=utf-8"},
		{"console.css", "text/css; charset=utf-8"},
	} {
		m := regexp.MustCompile(`/console/` + regexp.QuoteMeta(file.name) + `\?v=([0-9a-f]+)`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("the page does not name %s with a version: %s", file.name, body)
		}
		r := e.doAs("", "GET", m[0], nil)
		expect(t, r, http.StatusOK)
		confined(file.name, r.header)
		if got := r.header.Get("Content-Type"); got != file.contentType {
			t.Errorf("%s: Content-Type %q, want %q", file.name, got, file.contentType)
		}
		if got := r.header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
			t.Errorf("%s at its version: Cache-Control %q", file.name, got)
		}
		for _, other := range []string{"/console/" + file.name, "/console/" + file.name + "?v=0123abcd"} {
			r := e.doAs("", "GET", other, nil)
			expect(t, r, http.StatusOK)
			if got := r.header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("%s: Cache-Control %q, want no-cache", other, got)
			}
		}
	}
}
