package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/internal/traceparent"
)

// NewTracerProvider returns the tracer provider telemetry.traces asks for and a function that
// flushes and stops it. The standard OTEL_* variables are honoured: OTEL_EXPORTER_OTLP_ENDPOINT
// (or its _TRACES_ form) turns on OTLP even with exporter none,
// OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL=grpc picks gRPC over HTTP/protobuf, OTEL_SERVICE_NAME
// and OTEL_RESOURCE_ATTRIBUTES describe the service, OTEL_TRACES_SAMPLER[_ARG] override
// sample_ratio. stdout writes spans to w.
func NewTracerProvider(ctx context.Context, cfg config.Telemetry, w io.Writer) (trace.TracerProvider, func(context.Context) error, error) {
	exporter := traceExporter(cfg)
	var exp sdktrace.SpanExporter
	var err error
	switch exporter {
	case "none":
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	case "stdout":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
	case "otlp":
		if otlpGRPC() {
			var opts []otlptracegrpc.Option
			if cfg.Traces.Endpoint != "" {
				opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Traces.Endpoint))
			}
			exp, err = otlptracegrpc.New(ctx, opts...)
		} else {
			var opts []otlptracehttp.Option
			if e := cfg.Traces.Endpoint; e != "" {
				if !strings.HasSuffix(e, "/v1/traces") { // the collector's base address, as OTEL_EXPORTER_OTLP_ENDPOINT is
					e = strings.TrimSuffix(e, "/") + "/v1/traces"
				}
				opts = append(opts, otlptracehttp.WithEndpointURL(e))
			}
			exp, err = otlptracehttp.New(ctx, opts...)
		}
	default:
		return nil, nil, fmt.Errorf("telemetry.traces.exporter %q is not known", exporter)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: %s exporter: %w", exporter, err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", cfg.ServiceName),
			attribute.String("service.version", Version),
		),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the file
		resource.WithTelemetrySDK(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Traces.SampleRatio))))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return tp, tp.Shutdown, nil
}

// traceExporter is the exporter NewTracerProvider uses: telemetry.traces.exporter, or otlp when
// an OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT variable is set.
func traceExporter(cfg config.Telemetry) string {
	if cfg.Traces.Exporter == "none" && (os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "") {
		return "otlp"
	}
	return cfg.Traces.Exporter
}

// otlpGRPC reports whether OTLP goes over gRPC rather than HTTP/protobuf.
func otlpGRPC() bool {
	return strings.HasPrefix(firstEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc")
}

// TracesDestination says, as slog attributes, where NewTracerProvider(cfg) sends spans and
// which it samples, for the log at start: the exporter, and for otlp the protocol and the
// endpoint (with no credentials or query values) and where it came from.
func TracesDestination(cfg config.Telemetry) []any {
	exporter := traceExporter(cfg)
	attrs := []any{"exporter", exporter}
	switch exporter {
	case "none":
		return append(attrs, "destination", "nowhere: traces are not exported")
	case "stdout":
		attrs = append(attrs, "destination", "stdout")
	case "otlp":
		protocol, endpoint, from := "http/protobuf", cfg.Traces.Endpoint, "telemetry.traces.endpoint"
		if otlpGRPC() {
			protocol = "grpc"
		}
		switch {
		case endpoint != "":
			if protocol != "grpc" && !strings.HasSuffix(endpoint, "/v1/traces") {
				endpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
			}
		case os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
			endpoint, from = os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
		case os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
			endpoint, from = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "OTEL_EXPORTER_OTLP_ENDPOINT"
			if protocol != "grpc" {
				endpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
			}
		case protocol == "grpc":
			endpoint, from = "https://localhost:4317", "the exporter's default"
		default:
			endpoint, from = "https://localhost:4318/v1/traces", "the exporter's default"
		}
		attrs = append(attrs, "protocol", protocol, "destination", redactEndpoint(endpoint), "from", from)
	}
	if s := os.Getenv("OTEL_TRACES_SAMPLER"); s != "" {
		return append(attrs, "sampler", s, "sampler_arg", os.Getenv("OTEL_TRACES_SAMPLER_ARG"))
	}
	return append(attrs, "sample_ratio", cfg.Traces.SampleRatio)
}

// redactEndpoint is an endpoint URL without user information, and with its query values
// replaced: either may hold a credential.
func redactEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return endpoint
	}
	u.User = nil
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return strings.ToLower(v)
		}
	}
	return ""
}

// headerCarrier reads a Fiber request's headers for the propagator.
type headerCarrier struct{ c *fiber.Ctx }

func (h headerCarrier) Get(key string) string { return strings.Clone(h.c.Get(key)) }
func (h headerCarrier) Set(string, string)    {}
func (h headerCarrier) Keys() []string        { return []string{"traceparent", "tracestate", "baggage"} }

// unmatchedRoute marks, in c.Locals, a request that no route matched.
type unmatchedRoute struct{}

// serverSpans is the middleware that gives every request but the probes (and /metrics) a server span,
// continuing an inbound traceparent, named and described after the OpenTelemetry HTTP server
// conventions ("POST /v1/events"). Handlers find the span in c.UserContext().
func serverSpans(tp trace.TracerProvider) fiber.Handler {
	tracer := tp.Tracer("github.com/webhookgw/gateway")
	return func(c *fiber.Ctx) error {
		switch c.Path() {
		case "/healthz", "/readyz", "/metrics":
			return c.Next()
		}
		ctx := traceparent.Propagator.Extract(c.UserContext(), headerCarrier{c})
		// Fiber's strings share its buffers, reused by the next request; spans are exported
		// later, so every value is copied.
		method := strings.Clone(c.Method())
		ctx, span := tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", method),
				attribute.String("url.path", strings.Clone(c.Path())),
				attribute.String("url.scheme", strings.Clone(c.Protocol())),
			))
		defer span.End()
		c.SetUserContext(ctx)
		err := c.Next()
		if err != nil {
			// The error handler writes the response; call it now so the span sees its status.
			if herr := c.App().ErrorHandler(c, err); herr != nil {
				return herr
			}
			err = nil
		}
		status := c.Response().StatusCode()
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if c.Locals(unmatchedRoute{}) == nil {
			route := strings.Clone(c.Route().Path)
			span.SetName(method + " " + route)
			span.SetAttributes(attribute.String("http.route", route))
		}
		if status >= 500 {
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
			span.SetStatus(codes.Error, "")
		}
		return err
	}
}
