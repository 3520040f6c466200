package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
)

// BenchmarkIngestToDelivery measures events per second end to end: producers post over
// loopback HTTP, each answer comes after a durable commit to a real SQLite file, and the clock
// stops when the last event has reached a loopback subscriber.
//
//	go test -run '^$' -bench IngestToDelivery -benchtime 20000x ./gateway/
func BenchmarkIngestToDelivery(b *testing.B) {
	for _, bc := range []struct {
		name      string
		producers int
		batch     int
		tracing   bool
	}{
		{"single/producers=32", 32, 1, false},
		{"batch100/producers=4", 4, 100, false},
		{"single/producers=32/tracing", 32, 1, true},
		{"batch100/producers=4/tracing", 4, 100, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var tp trace.TracerProvider
			if bc.tracing {
				// Every span sampled and exported over OTLP/HTTP to a sink on loopback.
				sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "application/x-protobuf")
				}))
				defer sink.Close()
				tcfg := config.Default().Telemetry
				tcfg.Traces.Exporter, tcfg.Traces.Endpoint, tcfg.Traces.SampleRatio = "otlp", sink.URL, 1
				provider, stop, err := gateway.NewTracerProvider(context.Background(), tcfg, io.Discard)
				if err != nil {
					b.Fatal(err)
				}
				defer stop(context.Background())
				tp = provider
			}
			e := newEnvWith(b, func(c *config.Config) {
				c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
			}, func(o *gatewayOptions) { o.TracerProvider = tp })
			var delivered atomic.Int64
			done := make(chan struct{})
			var once sync.Once
			target := int64(b.N)
			rc := newReceiver(&testing.T{}, nil)
			rc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if delivered.Add(1) == target {
					once.Do(func() { close(done) })
				}
			})
			defer rc.Close()
			e.subscribe(&testing.T{}, rc.URL, "")
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: bc.producers}}
			var next atomic.Int64
			var failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for p := 0; p < bc.producers; p++ {
				wg.Go(func() {
					for {
						first := next.Add(int64(bc.batch)) - int64(bc.batch)
						if first >= int64(b.N) {
							return
						}
						n := min(int64(bc.batch), int64(b.N)-first)
						var sb strings.Builder
						if bc.batch > 1 {
							sb.WriteByte('[')
						}
						for i := int64(0); i < n; i++ {
							if i > 0 {
								sb.WriteByte(',')
							}
							fmt.Fprintf(&sb, `{"id":"ev-%d","type":"transaction.state.updated","transaction":{"id":"t-%d","state":"completed"}}`, first+i, first+i)
						}
						if bc.batch > 1 {
							sb.WriteByte(']')
						}
						resp, err := client.Post(e.base+"/v1/events", "application/json", strings.NewReader(sb.String()))
						if err != nil || resp.StatusCode != http.StatusAccepted {
							failed.Add(1)
						}
						if resp != nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
					}
				})
			}
			wg.Wait()
			ingested := time.Since(start)
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				b.Fatalf("only %d of %d delivered", delivered.Load(), b.N)
			}
			total := time.Since(start)
			b.StopTimer()
			if failed.Load() > 0 {
				b.Fatalf("%d posts failed", failed.Load())
			}
			b.ReportMetric(float64(b.N)/ingested.Seconds(), "ingested/s")
			b.ReportMetric(float64(b.N)/total.Seconds(), "delivered/s")
		})
	}
}
