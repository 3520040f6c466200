package gateway_test

import (
	"fmt"
	"testing"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
)

// The log at start says where spans go, as NewTracerProvider decides it, with no credentials.
func TestTracesDestination(t *testing.T) {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"} {
		t.Setenv(name, "")
	}
	telemetry := func(exporter, endpoint string) config.Telemetry {
		c := config.Default().Telemetry
		c.Traces.Exporter, c.Traces.Endpoint = exporter, endpoint
		return c
	}
	cases := []struct {
		name string
		cfg  config.Telemetry
		env  map[string]string
		want string
	}{
		{"none", telemetry("none", ""), nil,
			`[exporter none destination nowhere: traces are not exported]`},
		{"stdout", telemetry("stdout", ""), nil,
			`[exporter stdout destination stdout sample_ratio 1]`},
		{"otlp, the file's endpoint", telemetry("otlp", "http://user:secret@127.0.0.1:4318/"), nil,
			`[exporter otlp protocol http/protobuf destination http://127.0.0.1:4318/v1/traces from telemetry.traces.endpoint sample_ratio 1]`},
		{"otlp, the traces endpoint variable", telemetry("otlp", ""),
			map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otlp.example.com/v1/traces?api_key=secret"},
			`[exporter otlp protocol http/protobuf destination https://otlp.example.com/v1/traces?api_key=REDACTED from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT sample_ratio 1]`},
		{"otlp by the environment", telemetry("none", ""), map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			`[exporter otlp protocol http/protobuf destination http://collector:4318/v1/traces from OTEL_EXPORTER_OTLP_ENDPOINT sample_ratio 1]`},
		{"otlp over gRPC, the default endpoint", telemetry("otlp", ""),
			map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_SAMPLER": "always_on"},
			`[exporter otlp protocol grpc destination https://localhost:4317 from the exporter's default sampler always_on sampler_arg ]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			if got := fmt.Sprint(gateway.TracesDestination(c.cfg)); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
