package gateway_test

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/webhookgw/gateway/config"
)

// An attempt that gets no answer has an error.type from the documented few (timeout,
// connection_refused, connection_reset, tls, ...), not a Go type's name; one that gets an
// answer has its status code.
func TestAttemptErrorTypes(t *testing.T) {
	tp, rec := recorded()
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowedCIDRs = []string{"127.0.0.0/8"}
		c.Delivery.QuickRetries = 0
		// Long enough for a TLS handshake under -race on a busy machine, which must fail as "tls".
		c.Delivery.Timeout = 2 * time.Second
	}, func(o *gatewayOptions) { o.TracerProvider = tp; o.PollInterval = 5 * time.Millisecond })

	// A port nothing listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String() + "/"
	closed.Close()
	// A target that resets the connection once the request has come.
	resets, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer resets.Close()
	go func() {
		for {
			c, err := resets.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4096))
			c.(*net.TCPConn).SetLinger(0) // close with RST
			c.Close()
		}
	}()
	// A target that answers after the attempt's timeout.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	// A TLS target whose certificate nobody trusts.
	untrusted := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // its side of the failed handshake
	untrusted.StartTLS()
	defer untrusted.Close()
	failing := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })

	want := map[string]string{}
	for url, errType := range map[string]string{
		closedURL:                                "connection_refused",
		"http://" + resets.Addr().String() + "/": "connection_reset",
		slow.URL:                                 "timeout",
		untrusted.URL:                            "tls",
		failing.URL:                              "502",
	} {
		want[e.subscribe(t, url, "")] = errType
	}
	e.post(t, `{"id": "x1", "type": "task.state.updated"}`)
	got := map[string]string{}
	eventually(t, "an attempt span for each subscription", func() bool {
		for _, s := range rec.Ended() {
			sub, ok := spanAttr(s, "webhook.subscription.id")
			if !ok || s.SpanKind() != trace.SpanKindClient {
				continue
			}
			et, _ := spanAttr(s, "error.type")
			got[sub.AsString()] = et.AsString()
		}
		return len(got) == len(want)
	})
	for sub, errType := range want {
		if got[sub] != errType {
			t.Errorf("subscription %s: error.type %q, want %q", sub, got[sub], errType)
		}
	}
}
