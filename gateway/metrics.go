package gateway

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/webhookgw/gateway/delivery"
	"github.com/webhookgw/gateway/store"
)

// metrics are the gateway's Prometheus metrics, on a registry of their own.
type metrics struct {
	registry   *prometheus.Registry
	ingested   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	attempts   *prometheus.CounterVec
	duration   prometheus.Histogram
	refused    *prometheus.CounterVec
	// ingestRefused counts refused ingest requests by reason.
	ingestRefused *prometheus.CounterVec
}

// Label values every series is made with at start, so that a rate or ratio over them is 0, not
// "no data", before the first one happens.
var (
	deliveryOutcomes = []string{"succeeded", "retrying", "failed"}
	statusClasses    = []string{"2xx", "3xx", "4xx", "5xx", "error"}
	// ingestRefusals are the reasons of webhook_gateway_ingest_refused_total: bad_request (400:
	// the body is not events, 408: it did not arrive in time, 415: its encoding), unauthorized
	// (401), too_large (413), unknown_type (422), unavailable (5xx: the store did not take them).
	ingestRefusals = []string{"bad_request", "unauthorized", "too_large", "unknown_type", "unavailable"}
)

// newMetrics makes the metrics; eventTypes are events.types, whose series start at 0.
func newMetrics(st store.Store, now func() time.Time, eventTypes []string) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_gateway_events_ingested_total",
			Help: "Events accepted by POST /v1/events, by type; duplicate=\"true\" for repeated ids.",
		}, []string{"type", "duplicate"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_gateway_deliveries_total",
			Help: "Rounds of delivery attempts by outcome: succeeded, retrying (a durable retry is scheduled) or failed (for good).",
		}, []string{"outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_gateway_attempts_total",
			Help: "HTTP delivery attempts by the class of their status (2xx to 5xx), or error when there was no answer.",
		}, []string{"status_class"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "webhook_gateway_attempt_duration_seconds",
			Help:    "Duration of HTTP delivery attempts.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_gateway_connections_refused_total",
			Help: "Connections answered at once and closed because their listener (listen or admin.listen) held max_connections, or their client address max_connections_per_ip.",
		}, []string{"listener", "reason"}),
		ingestRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_gateway_ingest_refused_total",
			Help: "Requests to POST /v1/events refused, by reason: bad_request (400, 408, 415), unauthorized (401), too_large (413), unknown_type (422), unavailable (5xx).",
		}, []string{"reason"}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "webhook_gateway_build_info",
		Help:        "Always 1; its labels say which version of the gateway runs, built with which Go.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	for _, o := range deliveryOutcomes {
		m.deliveries.WithLabelValues(o)
	}
	for _, c := range statusClasses {
		m.attempts.WithLabelValues(c)
	}
	for _, r := range ingestRefusals {
		m.ingestRefused.WithLabelValues(r)
	}
	for _, t := range eventTypes {
		m.ingested.WithLabelValues(t, "false")
		m.ingested.WithLabelValues(t, "true")
	}
	m.registry.MustRegister(m.ingested, m.deliveries, m.attempts, m.duration, m.refused, m.ingestRefused, buildInfo,
		&storeCollector{store: st, now: now},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// listening starts the series of a listener's refused connections at 0.
func (m *metrics) listening(listener string) {
	m.refused.WithLabelValues(listener, refusedMaxConns)
	m.refused.WithLabelValues(listener, refusedPerIP)
}

// refusedIngest counts a refused ingest request by the status err is answered with.
func (m *metrics) refusedIngest(err error) {
	status := fiber.StatusInternalServerError
	var p *problemError
	var fe *fiber.Error
	switch {
	case errors.As(err, &p):
		status = p.Status
	case errors.As(err, &fe):
		status = fe.Code
	}
	reason := "bad_request"
	switch {
	case status == fiber.StatusUnauthorized:
		reason = "unauthorized"
	case status == fiber.StatusRequestEntityTooLarge:
		reason = "too_large"
	case status == fiber.StatusUnprocessableEntity:
		reason = "unknown_type"
	case status >= 500:
		reason = "unavailable"
	}
	m.ingestRefused.WithLabelValues(reason).Inc()
}

// watchEngine adds the delivery engine's gauges: attempts in flight, and subscriptions
// delivered to as probes (one delivery at a time) while they fail.
func (m *metrics) watchEngine(e *delivery.Engine) {
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "webhook_gateway_attempts_in_flight",
			Help: "HTTP delivery attempts in flight now.",
		}, func() float64 { return float64(e.Stats().InFlight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "webhook_gateway_subscriptions_probing",
			Help: "Subscriptions delivered to one delivery at a time because their recent attempts failed.",
		}, func() float64 { return float64(e.Stats().Probing) }),
	)
}

func (m *metrics) connectionRefused(listener, reason string) {
	m.refused.WithLabelValues(listener, reason).Inc()
}

func (m *metrics) ingestedEvent(r store.IngestResult) {
	m.ingested.WithLabelValues(r.Type, strconv.FormatBool(r.Duplicate)).Inc()
}

func (m *metrics) delivered(o *store.Outcome) {
	outcome := "failed"
	switch {
	case o.Succeeded:
		outcome = "succeeded"
	case o.NextAttemptAt != nil:
		outcome = "retrying"
	}
	m.deliveries.WithLabelValues(outcome).Inc()
	for _, a := range o.Attempts {
		class := "error"
		if a.StatusCode >= 100 && a.StatusCode <= 599 {
			class = strconv.Itoa(a.StatusCode/100) + "xx"
		}
		m.attempts.WithLabelValues(class).Inc()
		m.duration.Observe(a.Duration.Seconds())
	}
}

// storeCollector reads the queue and the subscriptions' states from the store at each scrape.
type storeCollector struct {
	store store.Store
	now   func() time.Time
}

var (
	queueDepthDesc = prometheus.NewDesc("webhook_gateway_queue_depth",
		"Deliveries pending: waiting for an attempt or in one.", nil, nil)
	oldestDueDesc = prometheus.NewDesc("webhook_gateway_oldest_pending_delivery_age_seconds",
		"How long the longest-due pending delivery has been due; 0 when none is due.", nil, nil)
	subscriptionsDesc = prometheus.NewDesc("webhook_gateway_subscriptions",
		"Subscriptions by state: active, error (active, in error state) or inactive.", []string{"state"}, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- oldestDueDesc
	ch <- subscriptionsDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.now().UTC()
	st, err := c.store.Stats(ctx, now)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDepthDesc, err)
		return
	}
	age := 0.0
	if !st.OldestDue.IsZero() {
		age = max(now.Sub(st.OldestDue).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(oldestDueDesc, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(subscriptionsDesc, prometheus.GaugeValue, float64(st.Active), "active")
	ch <- prometheus.MustNewConstMetric(subscriptionsDesc, prometheus.GaugeValue, float64(st.InErrorState), "error")
	ch <- prometheus.MustNewConstMetric(subscriptionsDesc, prometheus.GaugeValue, float64(st.Inactive), "inactive")
}
