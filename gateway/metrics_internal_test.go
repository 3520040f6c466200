package gateway

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// count is the value of webhook_gateway_ingest_refused_total{reason}, as a registry gathers it.
func (m *metrics) count(t *testing.T, reason string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.ingestRefused)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			if s.GetLabel()[0].GetValue() == reason {
				return s.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series for reason %q", reason)
	return 0
}

// Every status ingest answers with is counted under its documented reason; a store that does
// not take the events (a plain error, a 500, or a 503) is unavailable.
func TestIngestRefusalReasons(t *testing.T) {
	m := newMetrics(nil, time.Now, nil)
	for err, reason := range map[error]string{
		newProblem(fiber.StatusBadRequest, "x"):                "bad_request",
		newProblem(fiber.StatusRequestTimeout, "x"):            "bad_request",
		newProblem(fiber.StatusUnsupportedMediaType, "x"):      "bad_request",
		newProblem(fiber.StatusUnauthorized, "x"):              "unauthorized",
		newProblem(fiber.StatusRequestEntityTooLarge, "x"):     "too_large",
		fiber.ErrRequestEntityTooLarge:                         "too_large",
		newProblem(fiber.StatusUnprocessableEntity, "x"):       "unknown_type",
		newProblem(fiber.StatusServiceUnavailable, "x"):        "unavailable",
		fmt.Errorf("ingest: %w", errors.New("disk I/O error")): "unavailable",
	} {
		before := m.count(t, reason)
		m.refusedIngest(err)
		if after := m.count(t, reason); after != before+1 {
			t.Errorf("%v: %s went from %v to %v", err, reason, before, after)
		}
	}
}
