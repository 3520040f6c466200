// Package gateway is the webhook gateway's HTTP side and its lifecycle: the Fiber app with the
// ingest API (group commit into the store), the management API in both seed dialects, health
// and metrics, and the sync of declared subscriptions into the store. Serve runs the HTTP
// server beside the delivery engine (package delivery) and retention pruning, and shuts them
// down in order.
package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/delivery"
	"github.com/webhookgw/gateway/internal/groupcommit"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/store"
)

// managementBodyLimit bounds the body of a management API request.
const managementBodyLimit = 64 << 10

// Options are what New needs. Config, Store and Plugins are required.
type Options struct {
	Config  *config.Config
	Store   store.Store
	Plugins *plugins.Registry
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now; tests pin it.
	Now func() time.Time
	// NewID makes subscription, event and delivery ids; it defaults to random UUIDs.
	NewID func() string

	// PollInterval is the longest the delivery engine goes without asking the store which
	// subscriptions have due deliveries (default 5s). Commits wake it at once, and it keeps
	// each subscription's next due time; tests that move Now shorten it.
	PollInterval time.Duration
	// QuickRetryWait is the first wait between quick retries, doubled for each (default 1s).
	QuickRetryWait time.Duration
	// TracerProvider makes the server and attempt spans; nil makes none (the producer's trace
	// context is still passed on). See NewTracerProvider.
	TracerProvider trace.TracerProvider
}

// Gateway is the webhook gateway: its HTTP API, and the delivery engine Serve runs beside it.
type Gateway struct {
	cfg     *config.Config
	store   store.Store
	plugins *plugins.Registry
	log     *slog.Logger
	now     func() time.Time
	newID   func() string
	admin   *tokenSet
	app     *fiber.App

	ingestTokens *tokenSet // nil: no token needed
	ingestBatch  *groupcommit.Batcher[[]*store.Event, []store.IngestResult]
	engine       *delivery.Engine
	metrics      *metrics
	tracer       trace.TracerProvider
}

// New returns a Gateway for opts. It refuses a configuration without admin tokens: the
// management API is never open.
func New(opts Options) (*Gateway, error) {
	if opts.Config == nil || opts.Store == nil || opts.Plugins == nil {
		return nil, errors.New("gateway: Config, Store and Plugins are required")
	}
	if len(opts.Config.Admin.Tokens) == 0 {
		return nil, errors.New("gateway: no admin token configured")
	}
	g := &Gateway{
		cfg:     opts.Config,
		store:   opts.Store,
		plugins: opts.Plugins,
		log:     opts.Logger,
		now:     opts.Now,
		newID:   opts.NewID,
		admin:   newTokenSet(opts.Config.Admin.Tokens),
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.newID == nil {
		g.newID = func() string { return uuid.NewString() }
	}
	if len(opts.Config.Ingest.Tokens) > 0 {
		g.ingestTokens = newTokenSet(opts.Config.Ingest.Tokens)
	}
	g.tracer = opts.TracerProvider
	if g.tracer == nil {
		g.tracer = noop.NewTracerProvider()
	}
	g.metrics = newMetrics(opts.Store, g.now)
	g.engine = delivery.New(delivery.Options{
		Store:          opts.Store,
		Delivery:       opts.Config.Delivery,
		Security:       opts.Config.Security,
		Plugins:        opts.Plugins,
		Now:            g.now,
		Logger:         g.log,
		TracerProvider: g.tracer,
		UserAgent:      "webhook-gateway/" + Version,
		OnOutcome:      g.metrics.delivered,
		PollInterval:   opts.PollInterval,
		QuickRetryWait: cmp.Or(opts.QuickRetryWait, time.Second),
	})
	g.metrics.watchEngine(g.engine)
	g.ingestBatch = groupcommit.New(groupcommit.Options[[]*store.Event]{Max: 4096, Size: func(evs []*store.Event) int { return len(evs) }},
		func(ctx context.Context, reqs [][]*store.Event) ([][]store.IngestResult, error) {
			var all []*store.Event
			for _, evs := range reqs {
				all = append(all, evs...)
			}
			results, err := g.store.IngestEvents(ctx, all, g.newID)
			if err != nil {
				return nil, err
			}
			var targets []string
			for _, r := range results {
				targets = append(targets, r.Targets...)
			}
			g.engine.Notify(targets)
			out := make([][]store.IngestResult, len(reqs))
			for i, evs := range reqs {
				out[i], results = results[:len(evs)], results[len(evs):]
			}
			return out, nil
		})
	g.app = fiber.New(fiber.Config{
		AppName:               "webhook-gateway",
		DisableStartupMessage: true,
		BodyLimit:             int(max(opts.Config.Ingest.MaxBodyBytes, managementBodyLimit)),
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           120 * time.Second,
		ReadBufferSize:        16 << 10, // the request line and headers: more is 431
		ErrorHandler:          g.handleError,
		JSONEncoder:           json.Marshal,
		JSONDecoder:           json.Unmarshal,
	})
	// A response during shutdown says Connection: close, so keep-alive clients let go.
	g.app.Server().CloseOnShutdown = true
	g.app.Use(serverSpans(g.tracer))
	g.routes()
	return g, nil
}

// App returns the Fiber app, for tests that drive it with app.Test.
func (g *Gateway) App() *fiber.App { return g.app }

// Run listens on the configured address and serves until ctx ends, then shuts down.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return g.Serve(ctx, ln)
}

// Serve serves on ln and delivers until ctx ends. Then it shuts down in stages: it stops
// accepting and waits up to the configured shutdown_timeout for requests in flight (their
// events are committed), while the delivery engine stops claiming and lets rounds in flight
// finish for up to delivery.timeout + 5s, cancels the rest and records their outcomes; then it
// stops pruning, and last the ingest group commit. Nothing it starts outlives it. It returns
// nil after a clean shutdown.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	if err := g.store.RecoverLeases(context.WithoutCancel(ctx)); err != nil {
		ln.Close()
		return fmt.Errorf("gateway: recover leases: %w", err)
	}
	// The ingest group commit outlives the handlers that use it.
	batchCtx, stopBatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBatch()
	batched := make(chan struct{})
	go func() { g.ingestBatch.Run(batchCtx); close(batched) }()

	// The engine and pruning run until ctx ends, or serving fails.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var work errgroup.Group
	work.Go(func() error { return g.engine.Run(runCtx) })
	work.Go(func() error { g.prune(runCtx); return nil })

	g.log.Info("listening", "addr", ln.Addr().String(), "version", Version)
	if g.ingestTokens == nil {
		if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
			g.log.Warn("ingest.tokens is empty: POST /v1/events takes events from anyone who can reach " + ln.Addr().String())
		}
	}
	served := make(chan error, 1)
	go func() { served <- g.app.Listener(ln) }()
	var serveErr error
	select {
	case serveErr = <-served:
		serveErr = fmt.Errorf("gateway: serve: %w", serveErr)
		served = nil
	case <-ctx.Done():
	}
	err := g.shutdownHTTP(ctx, ln, served)
	stopRun()
	workErr := work.Wait()
	stopBatch()
	<-batched
	return errors.Join(serveErr, err, workErr)
}

// shutdownHTTP stops accepting and waits for the requests in flight, and for the listener's
// goroutine to report on served (nil when it already has).
func (g *Gateway) shutdownHTTP(ctx context.Context, ln net.Listener, served chan error) error {
	grace := cmp.Or(g.cfg.ShutdownTimeout, config.DefaultShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := g.app.ShutdownWithContext(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Requests still open after the grace period: their events are not acknowledged, so
		// nothing is lost by leaving them; that is not a failed shutdown.
		g.log.Warn("shutdown: connections still open after shutdown_timeout were abandoned", "shutdown_timeout", grace.String())
		err = nil
	}
	// fasthttp closes only a listener its Serve has already registered: a shutdown that comes
	// first would leave Serve blocked in Accept for good. Closing it here ends Serve either way.
	ln.Close()
	if served != nil { // nil when Serve has already returned
		if serveErr := <-served; serveErr != nil && err == nil {
			err = serveErr
		}
	}
	if err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}

// pruneBatch bounds one prune transaction, so that it holds the store's writer briefly.
const pruneBatch = 1000

// prune deletes finished deliveries older than store.retention, hourly and once at start, in
// batches of pruneBatch.
func (g *Gateway) prune(ctx context.Context) {
	if g.cfg.Store.Retention <= 0 {
		return
	}
	for {
		total := 0
		for more := true; more && ctx.Err() == nil; {
			var n int
			var err error
			n, more, err = g.store.Prune(ctx, g.now().Add(-g.cfg.Store.Retention), pruneBatch)
			if err != nil {
				if ctx.Err() == nil {
					g.log.Error("pruning finished deliveries", "err", err)
				}
				break
			}
			total += n
		}
		if total > 0 {
			g.log.Info("pruned finished deliveries", "deliveries", total, "retention", g.cfg.Store.Retention.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
	}
}

// SyncSubscriptions makes the store's file-owned subscriptions match cfg.Subscriptions: their
// targets, events, headers, plugins and delivery policies (max_in_flight, rate_limit,
// ordering). cfg must have passed Validate.
func (g *Gateway) SyncSubscriptions(ctx context.Context, cfg *config.Config) (store.SyncResult, error) {
	subs := make([]*store.Subscription, 0, len(cfg.Subscriptions))
	for i, s := range cfg.Subscriptions {
		sub := &store.Subscription{ID: s.ID, URL: s.URL, Events: s.Events}
		if len(sub.Events) == 0 {
			sub.Events = cfg.Events.Default
		}
		sub.Events = dedupe(sub.Events)
		if len(s.Headers) > 0 {
			sub.Headers = s.Headers
		}
		for j, p := range s.Plugins {
			text, err := nodeText(&p.Config)
			if err != nil {
				return store.SyncResult{}, fmt.Errorf("subscriptions[%d].plugins[%d].config: %w", i, j, err)
			}
			sub.Plugins = append(sub.Plugins, store.Plugin{Name: p.Name, Config: text})
		}
		if s.MaxInFlight != nil {
			sub.Policy.MaxInFlight = *s.MaxInFlight
		}
		if s.RateLimit != nil {
			sub.Policy.RateLimit = *s.RateLimit
		}
		sub.Policy.Ordering = store.Ordering(s.Ordering)
		subs = append(subs, sub)
	}
	res, err := g.store.SyncFileSubscriptions(ctx, subs, g.now().UTC())
	if err != nil {
		return res, fmt.Errorf("sync subscriptions from the file: %w", err)
	}
	g.engine.Wake()
	g.log.Info("subscriptions synced from the file", "created", res.Created, "updated", res.Updated, "deleted", res.Deleted)
	return res, nil
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
