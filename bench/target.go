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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/postgres"
	"github.com/webhookgw/gateway/store/sqlite"
)

// target is the gateway a run sends events to: one started in this process, or a running one.
// Either way it is reached only over HTTP.
type target struct {
	base        string   // such as http://127.0.0.1:8080; its management API registers the subscriptions
	ingest      []string // the base URLs events are posted to, in turn: replicas; nil is base
	adminToken  string
	ingestToken string
	desc        string
	client      *http.Client // for the management API
	subs        []string     // ids of the subscriptions registered
	idle        []string     // ids of the idle subscriptions registered
	stop        func() error // stops an in-process gateway; nil for a running one
	progress    io.Writer    // a terminal for the idle subscriptions' progress, or nil
}

// managementWorkers is how many management API requests at a time register, or delete, the
// idle subscriptions.
const managementWorkers = 16

// newManagementClient returns the client for a target's management API, which keeps a
// connection open for each of managementWorkers.
func newManagementClient() *http.Client {
	c := newClient(managementWorkers)
	c.Timeout = 30 * time.Second
	return c
}

// startGateway starts a gateway in this process as o describes, on a listener of its own on
// loopback, and waits until it is ready. Its configuration is the default one, but for
// plain-HTTP, loopback targets (the receivers) and a fresh admin token.
func startGateway(ctx context.Context, o *Options, stderr io.Writer) (t *target, err error) {
	dsn, dir := o.DSN, ""
	if dsn == "" && o.Store == "sqlite" {
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
	where := ""
	dropSchema := func() error { return nil }
	if o.Store == "postgres" {
		schemaDSN, schema, drop, err := freshSchema(ctx, dsn)
		if err != nil {
			return nil, fmt.Errorf("in-process gateway: %w", err)
		}
		cleanup = append(cleanup, drop)
		dsn, where, dropSchema = schemaDSN, "postgres, in schema "+schema+" (dropped at the end)", drop
	}

	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0" // unused: Serve gets a listener
	cfg.Store.Driver, cfg.Store.DSN, cfg.Store.Synchronous = o.Store, dsn, o.Synchronous
	cfg.Security.RequireHTTPS, cfg.Security.AllowPrivateNetworks = false, true
	token := "bench_" + randomHex(16)
	cfg.Admin.Tokens = []string{token}
	plugins := builtin.Registry()
	if err := cfg.Validate(plugins); err != nil {
		return nil, fmt.Errorf("in-process gateway: %w", err)
	}

	var st store.Store
	if o.Store == "postgres" {
		st, err = postgres.Open(ctx, dsn, postgres.Options{})
	} else {
		st, err = sqlite.Open(ctx, dsn, sqlite.Options{Synchronous: o.Synchronous})
	}
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
		err = errors.Join(err, stopTracing(context.Background()), st.Close(), dropSchema())
		if dir != "" {
			err = errors.Join(err, os.RemoveAll(dir))
		}
		return err
	}
	cleanup = []func() error{stop}

	switch {
	case where != "":
	case dir != "":
		where = fmt.Sprintf("sqlite on a temporary file (synchronous=%s)", o.Synchronous)
	default:
		where = fmt.Sprintf("sqlite on %s (synchronous=%s)", dsn, o.Synchronous)
	}
	tracing := "off"
	if o.Tracing {
		tracing = "on"
	}
	t = &target{
		base:       "http://" + ln.Addr().String(),
		adminToken: token,
		desc:       fmt.Sprintf("in-process gateway, %s, tracing %s", where, tracing),
		client:     newManagementClient(),
		stop:       stop,
	}
	if err := t.waitReady(ctx, 15*time.Second); err != nil {
		return nil, err
	}
	return t, nil
}

// remoteTarget returns the running gateways at o.Targets, once each answers /readyz. Posts go
// to each in turn; the management API is the first's.
func remoteTarget(ctx context.Context, o *Options) (*target, error) {
	bases := make([]string, len(o.Targets))
	for i, b := range o.Targets {
		bases[i] = strings.TrimSuffix(b, "/")
	}
	t := &target{
		base:        bases[0],
		ingest:      bases,
		adminToken:  o.Token,
		ingestToken: o.IngestToken,
		client:      newManagementClient(),
	}
	t.desc = "gateway at " + t.base
	if len(bases) > 1 {
		t.desc = fmt.Sprintf("%d gateways at %s (posts to each in turn)", len(bases), strings.Join(bases, ", "))
	}
	for _, b := range bases {
		one := &target{base: b, desc: "gateway at " + b, client: t.client}
		if err := one.waitReady(ctx, 5*time.Second); err != nil {
			return nil, err
		}
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

// subscribe registers a webhook for url, for the default event types, through the management
// API.
func (t *target) subscribe(ctx context.Context, url string) error {
	id, err := t.register(ctx, url, nil)
	if err != nil {
		return err
	}
	t.subs = append(t.subs, id)
	return nil
}

// subscribeIdle registers n webhooks for idleEventType, for URLs base/0 to base/n-1, with
// managementWorkers requests at a time.
func (t *target) subscribeIdle(ctx context.Context, base string, n int) error {
	ids := make([]string, n)
	done, err := t.each(ctx, "registering idle subscriptions", n, func(ctx context.Context, i int) error {
		var err error
		ids[i], err = t.register(ctx, base+"/"+strconv.Itoa(i), []string{idleEventType})
		return err
	})
	t.idle = slices.DeleteFunc(ids, func(id string) bool { return id == "" })
	if err != nil {
		return fmt.Errorf("idle subscriptions: %d of %d registered: %w", done, n, err)
	}
	return nil
}

// register registers a webhook for url and events (nil for the default types) through the
// management API, and returns its id.
func (t *target) register(ctx context.Context, url string, events []string) (string, error) {
	body, _ := json.Marshal(struct {
		URL    string   `json:"url"`
		Events []string `json:"events,omitempty"`
	}{url, events})
	status, answer, err := t.call(ctx, http.MethodPost, "/v1/webhooks", body)
	if err != nil {
		return "", fmt.Errorf("registering a subscription: %w", err)
	}
	switch status {
	case http.StatusCreated:
	case http.StatusUnauthorized:
		return "", fmt.Errorf("registering a subscription: %s refused the admin token (--token)", t.base)
	case http.StatusBadRequest:
		need := ""
		if len(events) > 0 {
			need = "; and events.types must list " + strings.Join(events, ", ")
		}
		return "", fmt.Errorf("registering a subscription for %s was refused: %s\n"+
			"The gateway must accept plain-HTTP targets on private addresses, where the receivers are: "+
			"security.require_https: false and security.allow_private_networks: true (or allowed_cidrs naming them)%s",
			url, answer, need)
	default:
		return "", fmt.Errorf("registering a subscription: POST /v1/webhooks answered HTTP %d: %s", status, answer)
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(answer, &created); err != nil || created.ID == "" {
		return "", fmt.Errorf("registering a subscription: no id in the answer %q", answer)
	}
	return created.ID, nil
}

// unsubscribe deletes the subscriptions subscribe registered, and those subscribeIdle
// registered on a running gateway (an in-process one's store is thrown away with it).
func (t *target) unsubscribe(ctx context.Context) error {
	var errs []error
	for _, id := range t.subs {
		errs = append(errs, t.delete(ctx, id))
	}
	t.subs = nil
	if t.stop == nil && len(t.idle) > 0 {
		done, err := t.each(ctx, "deleting idle subscriptions", len(t.idle), func(ctx context.Context, i int) error {
			return t.delete(ctx, t.idle[i])
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("idle subscriptions: %d of %d deleted: %w", done, len(t.idle), err))
		}
	}
	t.idle = nil
	return errors.Join(errs...)
}

// delete deletes subscription id through the management API; one already gone is no error.
func (t *target) delete(ctx context.Context, id string) error {
	status, answer, err := t.call(ctx, http.MethodDelete, "/v1/webhooks/"+id, nil)
	switch {
	case err != nil:
		return fmt.Errorf("deleting subscription %s: %w", id, err)
	case status != http.StatusNoContent && status != http.StatusNotFound:
		return fmt.Errorf("deleting subscription %s: HTTP %d: %s", id, status, answer)
	}
	return nil
}

// each calls do for 0 to n-1, managementWorkers calls at a time, showing what and how many
// calls are done on t.progress, if set. It stops at the first error, or when ctx ends, and
// returns it with how many calls succeeded.
func (t *target) each(ctx context.Context, what string, n int, do func(ctx context.Context, i int) error) (int64, error) {
	var done atomic.Int64
	if t.progress != nil {
		pctx, cancel := context.WithCancel(ctx)
		shown := make(chan struct{})
		go func() { showCount(pctx, t.progress, what, &done, n); close(shown) }()
		defer func() { cancel(); <-shown }()
	}
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(managementWorkers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := do(ctx, int(i)); err != nil {
					stop(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return done.Load(), context.Cause(ctx)
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
