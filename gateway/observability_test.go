package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins/builtin"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes what the exporter sends.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	names []string // service.name of each span's resource
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	o := &otlpReceiver{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		data, _ := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		o.mu.Lock()
		for _, rs := range req.ResourceSpans {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					o.spans = append(o.spans, s)
					o.names = append(o.names, service)
				}
			}
		}
		o.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(o.Close)
	return o
}

func attr(s *tracepb.Span, key string) *commonpb.AnyValue {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return nil
}

// The producer's trace runs through the gateway to the subscriber: producer traceparent ->
// the POST /v1/events server span -> one POST client span per attempt -> the traceparent the
// subscriber received.
func TestTraceFromProducerToSubscriber(t *testing.T) {
	otlp := newOTLPReceiver(t)
	tcfg := config.Default().Telemetry
	tcfg.ServiceName = "gw-under-test"
	tcfg.Traces.Exporter, tcfg.Traces.Endpoint = "otlp", otlp.URL
	tp, stopTracing, err := gateway.NewTracerProvider(context.Background(), tcfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
		c.Delivery.QuickRetries = 1
	}, func(o *gatewayOptions) {
		o.TracerProvider = tp
		o.QuickRetryWait = time.Millisecond
		o.PollInterval = 5 * time.Millisecond
	})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	sub := e.subscribe(t, rc.URL+"/hooks?token=query-secret", "")

	const traceID, producerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest("POST", e.base+"/v1/events", strings.NewReader(`{"id": "tr1", "type": "task.state.updated"}`))
	req.Header.Set("traceparent", "00-"+traceID+"-"+producerSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("ingest: %v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, "delivered", func() bool { return e.deliveryStatus(t, "tr1") == "succeeded" })
	d := e.deliveryOf(t, "tr1")
	if err := e.shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := stopTracing(context.Background()); err != nil { // flushes
		t.Fatal(err)
	}

	otlp.mu.Lock()
	defer otlp.mu.Unlock()
	var ingest *tracepb.Span
	var attempts []*tracepb.Span
	for i, s := range otlp.spans {
		if hex.EncodeToString(s.TraceId) != traceID {
			continue
		}
		if otlp.names[i] != "gw-under-test" {
			t.Errorf("span %q from service %q", s.Name, otlp.names[i])
		}
		switch {
		case s.Kind == tracepb.Span_SPAN_KIND_SERVER && strings.Contains(s.Name, "/v1/events"):
			ingest = s
		case s.Kind == tracepb.Span_SPAN_KIND_CLIENT:
			attempts = append(attempts, s)
		}
	}
	if ingest == nil {
		t.Fatalf("no server span for POST /v1/events in the producer's trace; got %d spans", len(otlp.spans))
	}
	if hex.EncodeToString(ingest.ParentSpanId) != producerSpan {
		t.Errorf("the ingest span's parent is %x, want the producer's %s", ingest.ParentSpanId, producerSpan)
	}
	if len(attempts) != 2 {
		t.Fatalf("%d attempt spans in the producer's trace, want 2", len(attempts))
	}
	for i, s := range attempts {
		if s.Name != "POST" {
			t.Errorf("attempt span named %q, want POST", s.Name)
		}
		if !bytes.Equal(s.ParentSpanId, ingest.SpanId) {
			t.Errorf("attempt %d's parent is %x, want the ingest span %x", i, s.ParentSpanId, ingest.SpanId)
		}
		want := map[string]any{
			"http.request.method":     "POST",
			"webhook.event.id":        "tr1",
			"webhook.event.type":      "task.state.updated",
			"webhook.subscription.id": sub,
			"webhook.delivery.id":     d["id"],
			"server.address":          "127.0.0.1",
		}
		for k, v := range want {
			if a := attr(s, k); a == nil || a.GetStringValue() != v {
				t.Errorf("attempt %d: %s = %v, want %v", i, k, a, v)
			}
		}
		for _, k := range []string{"server.port", "http.response.status_code", "webhook.attempt"} {
			if attr(s, k) == nil {
				t.Errorf("attempt %d has no %s", i, k)
			}
		}
		if u := attr(s, "url.full").GetStringValue(); strings.Contains(u, "query-secret") || !strings.Contains(u, "/hooks?token=REDACTED") {
			t.Errorf("url.full %q", u)
		}
	}
	first, second := attempts[0], attempts[1]
	if attr(first, "webhook.attempt").GetIntValue() != 1 {
		first, second = second, first
	}
	if attr(first, "http.response.status_code").GetIntValue() != 500 || attr(first, "error.type").GetStringValue() != "500" ||
		attr(first, "http.request.resend_count") != nil {
		t.Errorf("first attempt: status %v, error.type %v, resend_count %v", attr(first, "http.response.status_code"),
			attr(first, "error.type"), attr(first, "http.request.resend_count"))
	}
	if attr(second, "http.response.status_code").GetIntValue() != 200 || attr(second, "http.request.resend_count").GetIntValue() != 1 ||
		attr(second, "webhook.attempt").GetIntValue() != 2 {
		t.Errorf("second attempt: status %v, resend_count %v", attr(second, "http.response.status_code"), attr(second, "http.request.resend_count"))
	}
	// What the subscriber received: the attempt span's own context.
	for i := 0; i < 2; i++ {
		got := rc.request(i).header.Get("Traceparent")
		parts := strings.Split(got, "-")
		if len(parts) != 4 || parts[1] != traceID {
			t.Fatalf("subscriber got traceparent %q", got)
		}
		found := false
		for _, s := range attempts {
			found = found || hex.EncodeToString(s.SpanId) == parts[2]
		}
		if !found {
			t.Errorf("the traceparent's span %s is not an attempt span", parts[2])
		}
	}
	// And the attempt log names the trace.
	for _, a := range d["attemptLog"].([]any) {
		if a.(map[string]any)["traceId"] != traceID {
			t.Errorf("attempt log traceId %v", a.(map[string]any)["traceId"])
		}
	}
}

func TestMetricsAndLogs(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
		c.Delivery.QuickRetries = 0
		c.Delivery.ErrorStateAfter = 1
		c.Delivery.Jitter = 0 // the retry is due on a millisecond the API shows exactly
	}, func(o *gatewayOptions) {
		o.PollInterval = 5 * time.Millisecond
		o.Logger = slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ok := newReceiver(t, nil)
	bad := newReceiver(t, status(http.StatusBadGateway))
	e.subscribe(t, ok.URL, `, "events": ["task.state.updated"]`)
	badID := e.subscribe(t, bad.URL, `, "events": ["transaction.state.updated"]`)
	req, _ := http.NewRequest("POST", e.base+"/v1/events", strings.NewReader(
		`[{"id": "m1", "type": "task.state.updated"}, {"id": "m2", "type": "transaction.state.updated"}, {"id": "m1", "type": "task.state.updated"}]`))
	req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, "both attempted", func() bool {
		return e.deliveryStatus(t, "m1") == "succeeded" && e.deliveryOf(t, "m2")["attempts"] == 1.0
	})
	// A round is counted after its outcome is committed, so the API can show it first: wait
	// for both rounds on /metrics itself. Nothing is due after them (the clock stands still),
	// so the exact values below cannot grow while they are checked.
	eventually(t, "both rounds counted in /metrics", func() bool {
		m := scrapeMetrics(t, e.doAs("", "GET", "/metrics", nil))
		succeeded, _ := m("webhook_gateway_deliveries_total", map[string]string{"outcome": "succeeded"})
		retrying, _ := m("webhook_gateway_deliveries_total", map[string]string{"outcome": "retrying"})
		return succeeded >= 1 && retrying >= 1
	})
	metric := scrapeMetrics(t, e.doAs("", "GET", "/metrics", nil))
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := metric(name, labels)
		if !ok {
			t.Fatalf("no %s with %v", name, labels)
		}
		return v
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"webhook_gateway_events_ingested_total", map[string]string{"type": "task.state.updated", "duplicate": "false"}, 1},
		{"webhook_gateway_events_ingested_total", map[string]string{"type": "task.state.updated", "duplicate": "true"}, 1},
		{"webhook_gateway_events_ingested_total", map[string]string{"type": "transaction.state.updated", "duplicate": "false"}, 1},
		{"webhook_gateway_deliveries_total", map[string]string{"outcome": "succeeded"}, 1},
		{"webhook_gateway_deliveries_total", map[string]string{"outcome": "retrying"}, 1},
		{"webhook_gateway_attempts_total", map[string]string{"status_class": "2xx"}, 1},
		{"webhook_gateway_attempts_total", map[string]string{"status_class": "5xx"}, 1},
		{"webhook_gateway_attempt_duration_seconds", nil, 2},
		{"webhook_gateway_queue_depth", nil, 1},
		{"webhook_gateway_subscriptions", map[string]string{"state": "error"}, 1},
		{"webhook_gateway_subscriptions", map[string]string{"state": "active"}, 1},
		{"webhook_gateway_subscriptions", map[string]string{"state": "inactive"}, 0},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The retry is due at the first step of the schedule: nothing is overdue yet.
	if age := value("webhook_gateway_oldest_pending_delivery_age_seconds", nil); age != 0 {
		t.Errorf("oldest pending age %v, want 0", age)
	}

	// A minute after the retry is due. The serving gateway's clock is not moved, so its
	// dispatcher never finds the retry due and cannot take it out of the queue while we look:
	// the store is read at the later time directly, and through /metrics of a second gateway
	// on the same store whose clock is there (it does not serve, so it delivers nothing).
	due, err := time.Parse(time.RFC3339Nano, e.deliveryOf(t, "m2")["nextAttemptAt"].(string))
	if err != nil {
		t.Fatal(err)
	}
	overdue := due.Add(time.Minute)
	st, err := e.store.Stats(context.Background(), overdue)
	if err != nil {
		t.Fatal(err)
	}
	if !st.OldestDue.Equal(due) || st.Pending != 1 {
		t.Errorf("store stats a minute after the retry is due: oldest due %v, pending %d; want %v, 1", st.OldestDue, st.Pending, due)
	}
	later, err := gateway.New(gateway.Options{Config: e.cfg, Store: e.store, Plugins: builtin.Registry(),
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return overdue }})
	if err != nil {
		t.Fatal(err)
	}
	scraped, err := later.App().Test(httptest.NewRequest("GET", "/metrics", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(scraped.Body)
	scraped.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	age, scrapedAge := scrapeMetrics(t, response{status: scraped.StatusCode, body: body})("webhook_gateway_oldest_pending_delivery_age_seconds", nil)
	if !scrapedAge || age != 60 {
		t.Errorf("oldest pending age %v (found: %v) a minute after the retry is due, want 60", age, scrapedAge)
	}

	// Every log line about a delivery names its ids and its trace.
	if err := e.shutdown(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	found := false
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["delivery_id"] == nil {
			continue
		}
		found = true
		if m["event_id"] == nil || m["subscription_id"] == nil || m["trace_id"] != "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("delivery log line without its ids or trace: %s", line)
		}
		if m["subscription_id"] == badID && !strings.Contains(line, "HTTP 502") {
			t.Errorf("the failed delivery's line lacks the reason: %s", line)
		}
	}
	if !found {
		t.Fatal("no log line about a delivery")
	}
}

// scrapeMetrics parses a /metrics answer and returns a lookup: the value of the first sample
// of name whose labels include labels (a histogram's sample count), and whether there is one.
func scrapeMetrics(t *testing.T, r response) func(name string, labels map[string]string) (float64, bool) {
	t.Helper()
	expect(t, r, http.StatusOK)
	families, err := textParser().TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return func(name string, labels map[string]string) (float64, bool) {
		f := families[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
		return 0, false
	}
}

// textParser parses the Prometheus text format, with the classic metric name rules.
func textParser() *expfmt.TextParser {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return &p
}

// grpcReceiver is an OTLP/gRPC trace receiver.
type grpcReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (g *grpcReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			g.spans = append(g.spans, ss.Spans...)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// A user who only sets OTEL_EXPORTER_OTLP_ENDPOINT (the file says exporter: none) gets traces,
// over HTTP/protobuf by default and over gRPC with OTEL_EXPORTER_OTLP_PROTOCOL=grpc.
func TestOTLPFromEnvironment(t *testing.T) {
	traceOneEvent := func(t *testing.T) {
		t.Helper()
		tp, stop, err := gateway.NewTracerProvider(context.Background(), config.Default().Telemetry, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		e := newEnvWith(t, func(c *config.Config) {
			c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
		}, func(o *gatewayOptions) { o.TracerProvider = tp; o.PollInterval = 5 * time.Millisecond })
		rc := newReceiver(t, nil)
		e.subscribe(t, rc.URL, "")
		e.post(t, `{"id": "env1", "type": "task.state.updated"}`)
		eventually(t, "delivered", func() bool { return e.deliveryStatus(t, "env1") == "succeeded" })
		if err := e.shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("http", func(t *testing.T) {
		otlp := newOTLPReceiver(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
		t.Setenv("OTEL_SERVICE_NAME", "from-env")
		traceOneEvent(t)
		otlp.mu.Lock()
		defer otlp.mu.Unlock()
		if len(otlp.spans) < 2 || otlp.names[0] != "from-env" {
			t.Fatalf("%d spans, service %v", len(otlp.spans), otlp.names)
		}
	})
	t.Run("grpc", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rcv := &grpcReceiver{}
		srv := grpc.NewServer()
		coltracepb.RegisterTraceServiceServer(srv, rcv)
		go srv.Serve(ln)
		defer srv.Stop()
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
		traceOneEvent(t)
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		var post bool
		for _, s := range rcv.spans {
			post = post || (s.Name == "POST" && s.Kind == tracepb.Span_SPAN_KIND_CLIENT)
		}
		if !post {
			t.Fatalf("no attempt span over gRPC among %d spans", len(rcv.spans))
		}
	})
}

// recorded returns a tracer provider that keeps ended spans in memory.
func recorded() (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)), rec
}

func spanAttr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

// Server spans keep their own request's values, though Fiber reuses its buffers.
func TestServerSpansKeepTheirValues(t *testing.T) {
	tp, rec := recorded()
	e := newEnvWith(t, nil, func(o *gatewayOptions) { o.TracerProvider = tp })
	for i := 0; i < 50; i++ {
		e.do("GET", fmt.Sprintf("/v1/deliveries/id-%04d", i), nil)
		e.doAs("", "GET", "/healthz", nil)
	}
	e.do("POST", "/nope", nil)
	spans := rec.Ended()
	n := 0
	for _, s := range spans {
		path, _ := spanAttr(s, "url.path")
		method, _ := spanAttr(s, "http.request.method")
		switch {
		case strings.HasPrefix(path.AsString(), "/v1/deliveries/"):
			n++
			if want := fmt.Sprintf("/v1/deliveries/id-%04d", n-1); path.AsString() != want || method.AsString() != "GET" ||
				s.Name() != "GET /v1/deliveries/:id" {
				t.Fatalf("span %q: url.path %q method %q, want %q", s.Name(), path.AsString(), method.AsString(), want)
			}
		case path.AsString() == "/nope":
			if _, ok := spanAttr(s, "http.route"); ok || s.Name() != "POST" {
				t.Errorf("unmatched route: span %q with http.route", s.Name())
			}
		case path.AsString() == "/healthz":
			t.Error("a probe got a span")
		}
	}
	if n != 50 {
		t.Fatalf("%d delivery-route spans, want 50", n)
	}
}

// error.type says why an attempt failed, blocked ones included; a plugin's own request is not
// an attempt.
func TestAttemptSpansForFailures(t *testing.T) {
	tp, rec := recorded()
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowedCIDRs = []string{"127.0.0.0/8"}
		c.Delivery.QuickRetries = 0
	}, func(o *gatewayOptions) { o.TracerProvider = tp; o.PollInterval = 5 * time.Millisecond })
	target := newReceiver(t, nil)
	redirect := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target.URL, http.StatusFound) })
	tokens := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token": "t", "token_type": "Bearer", "expires_in": 3600}`)
	})
	e.subscribe(t, redirect.URL, `, "events": ["task.state.updated"]`)
	e.subscribe(t, target.URL, `, "events": ["transaction.state.updated"], "plugins": [{"name": "oauth2", "config": {
		"token_url": "`+tokens.URL+`", "client_id": "a", "client_secret": "b"}}]`)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(target.URL, "http://"))
	declare(t, e, "v6-loopback", "http://[::1]:"+port+"/") // not in allowed_cidrs: blocked at dial
	e.post(t, `[{"id": "f1", "type": "task.state.updated"}, {"id": "f2", "type": "transaction.state.updated"}]`)
	labelled := func() (n int) {
		for _, s := range rec.Ended() {
			if _, ok := spanAttr(s, "webhook.delivery.id"); ok && s.SpanKind() == trace.SpanKindClient {
				n++
			}
		}
		return n
	}
	// Every round is recorded: f1 to the redirect and the blocked target, f2 to the oauth2
	// target and the blocked one, and no other delivery exists. With no quick retries and the
	// clock standing still, no attempt can follow, so the span count below is final once the
	// spans of these rounds have ended.
	rounds := func() (n int) {
		for _, id := range []string{"f1", "f2"} {
			for _, d := range e.eventDeliveries(t, id) {
				if d["attempts"].(float64) >= 1 {
					n++
				}
			}
		}
		return n
	}
	eventually(t, "four rounds recorded", func() bool { return rounds() == 4 })
	for _, id := range []string{"f1", "f2"} {
		ds := e.eventDeliveries(t, id)
		if len(ds) != 2 {
			t.Fatalf("event %s has %d deliveries, want 2", id, len(ds))
		}
		for _, d := range ds {
			if d["attempts"] != 1.0 {
				t.Errorf("event %s to %v: %v attempts, want 1", id, d["subscriptionId"], d["attempts"])
			}
		}
	}
	eventually(t, "four attempt spans", func() bool { return labelled() >= 4 })
	errType := map[string]string{} // subscription -> error.type
	attempts := 0
	for _, s := range rec.Ended() {
		if s.SpanKind() != trace.SpanKindClient {
			continue
		}
		sub, labelled := spanAttr(s, "webhook.subscription.id")
		if u, _ := spanAttr(s, "url.full"); strings.HasPrefix(u.AsString(), tokens.URL) && labelled {
			t.Error("the oauth2 token request is labelled as a delivery attempt")
		}
		if !labelled {
			continue
		}
		attempts++
		et, _ := spanAttr(s, "error.type")
		errType[sub.AsString()] = et.AsString()
	}
	if attempts != 4 { // redirect and oauth2 target for f1/f2, and the blocked one for both
		t.Errorf("%d attempt spans, want 4 (%v)", attempts, errType)
	}
	if errType["v6-loopback"] != "blocked" {
		t.Errorf("blocked attempt: error.type %q", errType["v6-loopback"])
	}
	for sub, et := range errType {
		if sub != "v6-loopback" && et != "302" && et != "" {
			t.Errorf("%s: error.type %q", sub, et)
		}
	}
}

func TestReadyzWithoutTheDispatcher(t *testing.T) {
	e := newEnv(t, nil)
	gw, err := gateway.New(gateway.Options{Config: e.cfg, Store: e.store, Plugins: builtin.Registry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gw.App().Test(httptest.NewRequest("GET", "/readyz", nil), -1)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz of a gateway that is not serving: %v %v", resp.StatusCode, err)
	}
}

// A plugin's own request (oauth2's token request) gets url.full with query values redacted,
// as attempts do: otelhttp's own url.full would show them.
func TestPluginRequestSpanRedactsQuery(t *testing.T) {
	tp, rec := recorded()
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowPrivateNetworks = true
	}, func(o *gatewayOptions) { o.TracerProvider = tp; o.PollInterval = 5 * time.Millisecond })
	tokens := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token": "t", "token_type": "Bearer", "expires_in": 3600}`)
	})
	target := newReceiver(t, nil)
	e.subscribe(t, target.URL+"/hooks?sig=target-query-secret", `, "plugins": [{"name": "oauth2", "config": {
		"token_url": "`+tokens.URL+`/token?audience=token-query-secret&tenant=t1", "client_id": "a", "client_secret": "b"}}]`)
	e.post(t, `{"id": "q1", "type": "task.state.updated"}`)
	eventually(t, "delivered", func() bool { return e.deliveryStatus(t, "q1") == "succeeded" })

	var tokenSpan, attemptSpan sdktrace.ReadOnlySpan
	eventually(t, "token request and attempt spans", func() bool {
		for _, s := range rec.Ended() {
			if s.SpanKind() != trace.SpanKindClient {
				continue
			}
			u, _ := spanAttr(s, "url.full")
			switch {
			case strings.HasPrefix(u.AsString(), tokens.URL):
				tokenSpan = s
			case strings.HasPrefix(u.AsString(), target.URL):
				attemptSpan = s
			}
		}
		return tokenSpan != nil && attemptSpan != nil
	})
	if u, _ := spanAttr(tokenSpan, "url.full"); u.AsString() != tokens.URL+"/token?audience=REDACTED&tenant=REDACTED" {
		t.Errorf("token request url.full %q", u.AsString())
	}
	if u, _ := spanAttr(attemptSpan, "url.full"); u.AsString() != target.URL+"/hooks?sig=REDACTED" {
		t.Errorf("attempt url.full %q", u.AsString())
	}
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if v := a.Value.String(); strings.Contains(v, "query-secret") {
				t.Errorf("span %q: %s = %q", s.Name(), a.Key, v)
			}
		}
		if strings.Contains(s.Name()+s.Status().Description, "query-secret") {
			t.Errorf("span %q (%s) shows a query value", s.Name(), s.Status().Description)
		}
	}
}
