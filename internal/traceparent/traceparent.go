// Package traceparent stores a span's W3C trace context as text and continues it later: an
// event keeps its producer's traceparent so that deliveries, minutes or hours later, join the
// producer's trace.
package traceparent

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/propagation"
)

// Propagator is the gateway's: W3C trace context and baggage.
var Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// carrier is a TextMapCarrier over a stored traceparent.
type carrier map[string]string

func (m carrier) Get(key string) string { return m[strings.ToLower(key)] }
func (m carrier) Set(key, value string) { m[strings.ToLower(key)] = value }
func (m carrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// From returns the W3C traceparent of the span in ctx, "" when there is none.
func From(ctx context.Context) string {
	c := carrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// With returns ctx continuing the trace a stored traceparent names.
func With(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, carrier{"traceparent": tp})
}
