package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store/sqlite"
)

// target is the gateway a run sends events to: one started in this process, or a running one.
// Either way it is reached only over HTTP.
type target struct {
	base        string // such as http://127.0.0.1:8080
	adminToken  string
	ingestToken string
	desc        string
	client      *http.Client // for the management API
	subs        []string     // ids of the subscriptions registered
	stop        func() error // stops an in-process gateway; nil for a running one
}

// startGateway starts a gateway in this process as o describes, on a listener of its own on
// loopback, and waits until it is ready. Its configuration is the default one, but for
// plain-HTTP, loopback targets (the receivers) and a fresh admin token.
func startGateway(ctx context.Context, o *Options, stderr io.Writer) (t *target, err error) {
	dsn, dir := o.DSN, ""
	if dsn == "" {
		if dir, err = os.MkdirTemp("", "gateway-bench-"); err != nil {
			return nil, fmt.Errorf("temporary store: %w", err)
		}
		dsn = filepath.Join(dir, "bench.db")
	}
	var cleanup []func() error
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				err = errors.Join(err, cleanup[i]())
			}
			if dir != "" {
				os.RemoveAll(dir)
			}
		}
	}()

	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0" // unused: Serve gets a listener
	cfg.Store.DSN, cfg.Store.Synchronous = dsn, o.Synchronous
	cfg.Security.RequireHTTPS, cfg.Security.AllowPrivateNetworks = false, true
	token := "bench_" + randomHex(16)
	cfg.Admin.Tokens = []string{token}
	plugins := builtin.Registry()
	if err := cfg.Validate(plugins); err != nil {
		return nil, fmt.Errorf("in-process gateway: %w", err)
	}

	st, err := sqlite.Open(ctx, dsn, sqlite.Options{Synchronous: o.Synchronous})
	if err != nil {
		return nil, fmt.Errorf("in-process gateway: %w", err)
	}
	cleanup = append(cleanup, st.Close)
	opts := gateway.Options{Config: cfg, Store: st, Plugins: plugins, Logger: newLogger(o.LogLevel, stderr)}
	stopTracing := func(context.Context) error { return nil }
	if o.Tracing {
		tcfg := cfg.Telemetry
		tcfg.Traces.Exporter, tcfg.Traces.SampleRatio = "stdout", 1
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			tcfg.Traces.Exporter = "none" // which those variables turn into otlp
		}
		if opts.TracerProvider, stopTracing, err = gateway.NewTracerProvider(ctx, tcfg, io.Discard); err != nil {
			return nil, fmt.Errorf("in-process gateway: %w", err)
		}
		cleanup = append(cleanup, func() error { return stopTracing(context.Background()) })
	}
	gw, err := gateway.New(opts)
	if err != nil {
		return nil, fmt.Errorf("in-process gateway: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("in-process gateway: %w", err)
	}
	// The gateway runs until the run's teardown, even after an interrupt.
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- gw.Serve(serveCtx, ln) }()
	stop := func() error {
		cancel()
		err := <-served
		err = errors.Join(err, stopTracing(context.Background()), st.Close())
		if dir != "" {
			err = errors.Join(err, os.RemoveAll(dir))
		}
		return err
	}
	cleanup = []func() error{stop}

	where := "a temporary file"
	if dir == "" {
		where = dsn
	}
	tracing := "off"
	if o.Tracing {
		tracing = "on"
	}
	t = &target{
		base:       "http://" + ln.Addr().String(),
		adminToken: token,
		desc:       fmt.Sprintf("in-process gateway, sqlite on %s (synchronous=%s), tracing %s", where, o.Synchronous, tracing),
		client:     &http.Client{Timeout: 30 * time.Second},
		stop:       stop,
	}
	if err := t.waitReady(ctx, 15*time.Second); err != nil {
		return nil, err
	}
	return t, nil
}

// remoteTarget returns the running gateway at o.Target, once it answers /readyz.
func remoteTarget(ctx context.Context, o *Options) (*target, error) {
	t := &target{
		base:        strings.TrimSuffix(o.Target, "/"),
		adminToken:  o.Token,
		ingestToken: o.IngestToken,
		client:      &http.Client{Timeout: 30 * time.Second},
	}
	t.desc = "gateway at " + t.base
	if err := t.waitReady(ctx, 5*time.Second); err != nil {
		return nil, err
	}
	return t, nil
}

// newLogger returns the in-process gateway's logger: text on w at level, or nothing for "off".
func newLogger(level string, w io.Writer) *slog.Logger {
	if level == "off" {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	l.UnmarshalText([]byte(level)) // checked by Options.check
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// waitReady waits up to limit for GET /readyz to answer 200.
func (t *target) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("%s: %w", t.desc, err)
		}
		resp, err := t.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /readyz answered %s", resp.Status)
		}
		last = err
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s is not ready: %w", t.desc, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subscribe registers a webhook for url through the management API.
func (t *target) subscribe(ctx context.Context, url string) error {
	body, _ := json.Marshal(map[string]string{"url": url})
	status, answer, err := t.call(ctx, http.MethodPost, "/v1/webhooks", body)
	if err != nil {
		return fmt.Errorf("registering a subscription: %w", err)
	}
	switch status {
	case http.StatusCreated:
	case http.StatusUnauthorized:
		return fmt.Errorf("registering a subscription: %s refused the admin token (--token)", t.base)
	case http.StatusBadRequest:
		return fmt.Errorf("registering a subscription for %s was refused: %s\n"+
			"The gateway must accept plain-HTTP targets on private addresses, where the receivers are: "+
			"security.require_https: false and security.allow_private_networks: true (or allowed_cidrs naming them)",
			url, answer)
	default:
		return fmt.Errorf("registering a subscription: POST /v1/webhooks answered HTTP %d: %s", status, answer)
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(answer, &created); err != nil || created.ID == "" {
		return fmt.Errorf("registering a subscription: no id in the answer %q", answer)
	}
	t.subs = append(t.subs, created.ID)
	return nil
}

// unsubscribe deletes the subscriptions subscribe registered.
func (t *target) unsubscribe(ctx context.Context) error {
	var errs []error
	for _, id := range t.subs {
		status, answer, err := t.call(ctx, http.MethodDelete, "/v1/webhooks/"+id, nil)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("deleting subscription %s: %w", id, err))
		case status != http.StatusNoContent && status != http.StatusNotFound:
			errs = append(errs, fmt.Errorf("deleting subscription %s: HTTP %d: %s", id, status, answer))
		}
	}
	t.subs = nil
	return errors.Join(errs...)
}

// call makes a management API request and returns the status and the body.
func (t *target) call(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.adminToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, bytes.TrimSpace(answer), err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
