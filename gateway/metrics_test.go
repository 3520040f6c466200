package gateway_test

import (
	"bytes"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
)

// scrape reads /metrics from base.
func scrape(t *testing.T, base string) string {
	t.Helper()
	r := send(t, base, "", "GET", "/metrics", "")
	expect(t, r, http.StatusOK)
	return string(r.body)
}

// expectSeries fails unless text has each series with its value.
func expectSeries(t *testing.T, text string, series ...string) {
	t.Helper()
	lines := map[string]bool{}
	for line := range strings.Lines(text) {
		lines[strings.TrimSuffix(line, "\n")] = true
	}
	for _, s := range series {
		if !lines[s] {
			name, _, _ := strings.Cut(s, "{")
			t.Errorf("no series %s; the metric's lines:\n%s", s, grepLines([]byte(text), name))
		}
	}
}

// A fresh gateway's metrics pass promlint, and every label value a rate or ratio is taken over
// is there at 0 before anything happens; refused ingest requests are counted by reason.
func TestMetricsLintAndStartAtZero(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Ingest.Tokens = []string{"ingest-token"}
		c.Ingest.MaxBodyBytes = 1024
	})
	text := scrape(t, e.base)
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	expectSeries(t, text,
		`webhook_gateway_deliveries_total{outcome="succeeded"} 0`,
		`webhook_gateway_deliveries_total{outcome="retrying"} 0`,
		`webhook_gateway_deliveries_total{outcome="failed"} 0`,
		`webhook_gateway_attempts_total{status_class="2xx"} 0`,
		`webhook_gateway_attempts_total{status_class="3xx"} 0`,
		`webhook_gateway_attempts_total{status_class="4xx"} 0`,
		`webhook_gateway_attempts_total{status_class="5xx"} 0`,
		`webhook_gateway_attempts_total{status_class="error"} 0`,
		`webhook_gateway_ingest_refused_total{reason="bad_request"} 0`,
		`webhook_gateway_ingest_refused_total{reason="unauthorized"} 0`,
		`webhook_gateway_ingest_refused_total{reason="too_large"} 0`,
		`webhook_gateway_ingest_refused_total{reason="unknown_type"} 0`,
		`webhook_gateway_ingest_refused_total{reason="unavailable"} 0`,
		`webhook_gateway_events_ingested_total{duplicate="false",type="transaction.state.updated"} 0`,
		`webhook_gateway_events_ingested_total{duplicate="true",type="task.state.updated"} 0`,
		`webhook_gateway_connections_refused_total{listener="listen",reason="max_connections"} 0`,
		`webhook_gateway_connections_refused_total{listener="listen",reason="max_connections_per_ip"} 0`,
		`webhook_gateway_build_info{goversion="`+runtime.Version()+`",version="`+gateway.Version+`"} 1`,
	)

	post := func(token, body string, status int) {
		t.Helper()
		expect(t, e.doAs(token, "POST", "/v1/events", body), status)
	}
	post("", `{"type": "task.state.updated"}`, http.StatusUnauthorized)
	post("wrong", `{"type": "task.state.updated"}`, http.StatusUnauthorized)
	post("ingest-token", `{"type": `, http.StatusBadRequest)
	post("ingest-token", `{"type": "nope"}`, http.StatusUnprocessableEntity)
	post("ingest-token", `{"type": "task.state.updated", "pad": "`+strings.Repeat("x", 2048)+`"}`, http.StatusRequestEntityTooLarge)
	post("ingest-token", `{"id": "m1", "type": "task.state.updated"}`, http.StatusAccepted)
	expectSeries(t, scrape(t, e.base),
		`webhook_gateway_ingest_refused_total{reason="unauthorized"} 2`,
		`webhook_gateway_ingest_refused_total{reason="bad_request"} 1`,
		`webhook_gateway_ingest_refused_total{reason="unknown_type"} 1`,
		`webhook_gateway_ingest_refused_total{reason="too_large"} 1`,
		`webhook_gateway_ingest_refused_total{reason="unavailable"} 0`,
		`webhook_gateway_events_ingested_total{duplicate="false",type="task.state.updated"} 1`,
	)
}

// With admin.listen, the admin listener's refused connections start at 0 too.
func TestMetricsOfTheAdminListener(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Admin.Listen = "127.0.0.1:0" })
	text := scrape(t, e.admin)
	expectSeries(t, text,
		`webhook_gateway_connections_refused_total{listener="admin.listen",reason="max_connections"} 0`,
		`webhook_gateway_connections_refused_total{listener="listen",reason="max_connections_per_ip"} 0`,
	)
	if _, err := promlint.New(bytes.NewReader([]byte(text))).Lint(); err != nil {
		t.Fatal(err)
	}
}
