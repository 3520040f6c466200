// Package gateway is the webhook gateway's HTTP side and its lifecycle: the Fiber app with the
// ingest API (group commit into the store), the management API in both seed dialects, health
// and metrics, and the sync of declared subscriptions into the store. Serve (one listener) and
// ServeAll (ingest and management on listeners of their own) run the HTTP servers beside the
// delivery engine (package delivery) and retention pruning, and shut them down in order.
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
	"sync/atomic"
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
	// RecoveryRetryWait is how long Serve waits before trying again to recover the delivery
	// leases when that failed at start (a full disk); default 5s.
	RecoveryRetryWait time.Duration
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
	activity     *activity // attempts by minute, for GET /v1/stats
	tracer       trace.TracerProvider

	recoveryWait time.Duration
	recovering   atomic.Pointer[error] // why the leases are not recovered yet; nil once they are
	writesFail   atomic.Bool           // the last store write the gateway saw failed (logged once)
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

		recoveryWait: cmp.Or(opts.RecoveryRetryWait, 5*time.Second),
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.newID == nil {
		// Time-ordered (UUIDv7): new deliveries and their attempts land at the end of their
		// indexes instead of on random pages.
		g.newID = func() string { return uuid.Must(uuid.NewV7()).String() }
	}
	if len(opts.Config.Ingest.Tokens) > 0 {
		g.ingestTokens = newTokenSet(opts.Config.Ingest.Tokens)
	}
	g.tracer = opts.TracerProvider
	if g.tracer == nil {
		g.tracer = noop.NewTracerProvider()
	}
	g.metrics = newMetrics(opts.Store, g.now, opts.Config.Events.Types)
	g.activity = newActivity(g.now())
	g.engine = delivery.New(delivery.Options{
		Store:          opts.Store,
		Delivery:       opts.Config.Delivery,
		Security:       opts.Config.Security,
		Plugins:        opts.Plugins,
		Now:            g.now,
		Logger:         g.log,
		TracerProvider: g.tracer,
		UserAgent:      "webhook-gateway/" + Version,
		OnOutcome:      func(o *store.Outcome) { g.metrics.delivered(o); g.activity.record(o) },
		PollInterval:   opts.PollInterval,
		Lease:          opts.Config.Delivery.Lease,
		QuickRetryWait: cmp.Or(opts.QuickRetryWait, time.Second),
	})
	g.metrics.watchEngine(g.engine)
	g.ingestBatch = groupcommit.New(groupcommit.Options[[]*store.Event]{Max: 4096, Size: func(evs []*store.Event) int { return len(evs) }},
		func(ctx context.Context, reqs [][]*store.Event) ([][]store.IngestResult, error) {
			var all []*store.Event
			for _, evs := range reqs {
				all = append(all, evs...)
			}
			opts, end := g.engine.BeginIngest(g.newID)
			results, err := g.store.IngestEvents(ctx, all, opts)
			end(results, err)
			if err != nil {
				return nil, err
			}
			out := make([][]store.IngestResult, len(reqs))
			for i, evs := range reqs {
				out[i], results = results[:len(evs)], results[len(evs):]
			}
			return out, nil
		})
	g.app = g.newApp(g.healthRoutes, g.metricsRoute, g.ingestRoutes, g.managementRoutes, g.consoleRoutes)
	return g, nil
}

// newApp returns a Fiber app with the gateway's server settings that serves the given sets
// of routes.
func (g *Gateway) newApp(routeSets ...func(*fiber.App)) *fiber.App {
	app := fiber.New(fiber.Config{
		AppName:               "webhook-gateway",
		DisableStartupMessage: true,
		BodyLimit:             int(max(g.cfg.Ingest.MaxBodyBytes, managementBodyLimit)),
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           120 * time.Second,
		ReadBufferSize:        16 << 10, // the request line and headers: more is 431
		ErrorHandler:          g.handleError,
		JSONEncoder:           marshalJSON,
		JSONDecoder:           json.Unmarshal,

		// Bodies are read by the handlers, after the token, up to their route's limit (see
		// readBody), not by the server before them: it would allocate the announced size.
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true, // it would read a multipart body before any handler
		// connLimiter refuses connections over max_connections first, with a problem document;
		// this holds for connections that reach the server by another way.
		Concurrency: g.cfg.MaxConnections,
	})
	// A response during shutdown says Connection: close, so keep-alive clients let go.
	app.Server().CloseOnShutdown = true
	app.Use(closeUnreadBodies)
	app.Use(serverSpans(g.tracer))
	for _, add := range routeSets {
		add(app)
	}
	app.Use(noRoute)
	return app
}

// App returns the Fiber app that serves every route, as Serve does, for tests that drive it
// with app.Test.
func (g *Gateway) App() *fiber.App { return g.app }

// Run listens on the configured addresses (listen, and admin.listen when set) and serves until
// ctx ends, then shuts down.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	var admin net.Listener
	if g.cfg.Admin.Listen != "" {
		if admin, err = net.Listen("tcp", g.cfg.Admin.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("gateway: admin.listen: %w", err)
		}
	}
	return g.ServeAll(ctx, ln, admin)
}

// Serve serves every route on ln and delivers until ctx ends: it is ServeAll with no admin
// listener.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	return g.ServeAll(ctx, ln, nil)
}

// ServeAll serves and delivers until ctx ends. With admin nil, ln serves every route. With an
// admin listener, ln serves ingest (POST /v1/events) and the health probes, and admin serves
// the management API, /metrics and the health probes.
//
// When ctx ends it shuts down: it stops accepting on ln, then on admin, and waits (both
// together at most shutdown_timeout) for requests in flight (their events are committed);
// meanwhile the delivery engine stops claiming, lets rounds in flight finish (cancelling them
// after delivery.timeout + 5s) and records their outcomes, and pruning stops; last the ingest
// group commit stops. Every
// goroutine it starts has ended when it returns, but for request handlers still running after
// shutdown_timeout (their requests were not answered: nothing is lost). It returns nil after a
// clean shutdown.
//
// The delivery engine starts once the leases of the process that used the store before are
// recovered (store.RecoverLeases). When that fails (a full disk), it serves all the same, reads
// and /healthz, but /readyz answers 503 and nothing is delivered until a retry, every
// RecoveryRetryWait, succeeds.
func (g *Gateway) ServeAll(ctx context.Context, ln, admin net.Listener) error {
	servers := []*httpServer{{name: "listen", app: g.app, ln: ln}}
	if admin != nil {
		servers = []*httpServer{
			{name: "listen", app: g.newApp(g.healthRoutes, g.ingestRoutes), ln: ln},
			{name: "admin.listen", app: g.newApp(g.healthRoutes, g.metricsRoute, g.managementRoutes, g.consoleRoutes), ln: admin},
		}
	}
	recoverErr := g.store.RecoverLeases(context.WithoutCancel(ctx))
	if recoverErr != nil {
		g.recovering.Store(&recoverErr)
		g.log.Error("recovering the delivery leases failed: serving, not ready and not delivering, until a retry succeeds",
			"err", recoverErr, "retry_every", g.recoveryWait.String())
	}
	for _, s := range servers {
		g.metrics.listening(s.name)
		s.ln = newConnLimiter(s.ln, g.cfg.MaxConnections, g.cfg.MaxConnectionsPerIP, s.name, g.log,
			func(reason string) { g.metrics.connectionRefused(s.name, reason) })
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
	work.Go(func() error {
		if recoverErr != nil && !g.retryRecovery(runCtx) {
			return nil
		}
		return g.engine.Run(runCtx)
	})
	work.Go(func() error { g.prune(runCtx); return nil })
	work.Go(func() error { g.sampleQueue(runCtx); return nil })

	if admin != nil {
		g.log.Info("listening", "addr", ln.Addr().String(), "admin", admin.Addr().String(), "version", Version)
	} else {
		g.log.Info("listening", "addr", ln.Addr().String(), "version", Version)
	}
	if g.ingestTokens == nil {
		if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
			g.log.Warn("ingest.tokens is empty: POST /v1/events takes events from anyone who can reach " + ln.Addr().String())
		}
	}
	ended := make(chan struct{}, len(servers)) // a server's Serve returned
	for _, s := range servers {
		s.done = make(chan struct{})
		go func() {
			s.err = s.app.Listener(s.ln)
			close(s.done)
			ended <- struct{}{}
		}()
	}
	select {
	case <-ended:
	case <-ctx.Done():
	}
	var errs []error
	for _, s := range servers {
		select {
		case <-s.done: // ended before the shutdown: a failure
			errs = append(errs, fmt.Errorf("gateway: serve %s: %w", s.name, cmp.Or(s.err, errors.New("stopped"))))
			s.reported = true
		default:
		}
	}
	// Ingest stops first, then the management API; both share one grace period.
	grace := cmp.Or(g.cfg.ShutdownTimeout, config.DefaultShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	for _, s := range servers {
		errs = append(errs, g.shutdownHTTP(shutdownCtx, s))
	}
	stopRun()
	errs = append(errs, work.Wait())
	stopBatch()
	<-batched
	return errors.Join(errs...)
}

// retryRecovery tries store.RecoverLeases again every recoveryWait until it succeeds, which
// it reports, or ctx ends. The engine must not claim before: recovery releases every lease.
func (g *Gateway) retryRecovery(ctx context.Context) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(g.recoveryWait):
		}
		err := g.store.RecoverLeases(ctx)
		if err == nil {
			g.recovering.Store(nil)
			g.log.Info("delivery leases recovered: delivering")
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		g.recovering.Store(&err)
		g.log.Debug("recovering the delivery leases failed again", "err", err)
	}
}

// storeWrote notes the outcome of a store write the gateway made for a request, and logs a
// change: the first failure (not one a request), and the first success after failures.
func (g *Gateway) storeWrote(err error) {
	switch {
	case err != nil && !g.writesFail.Swap(true):
		g.log.Error("store writes fail: ingest answers 503 and /readyz not ready until they work again", "err", err)
	case err == nil && g.writesFail.Load() && g.writesFail.Swap(false):
		g.log.Info("store writes work again")
	}
}

// httpServer is a Fiber app serving on a listener.
type httpServer struct {
	name     string // its configuration key, for errors
	app      *fiber.App
	ln       net.Listener
	done     chan struct{} // closed when app.Listener has returned, with err
	err      error
	reported bool // err is already reported
}

// shutdownHTTP stops s accepting and waits, until ctx ends, for the requests in flight, and
// for its Serve to return.
func (g *Gateway) shutdownHTTP(ctx context.Context, s *httpServer) error {
	err := s.app.ShutdownWithContext(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Requests still open after the grace period: their events are not acknowledged, so
		// nothing is lost by leaving them; that is not a failed shutdown.
		g.log.Warn("shutdown: connections still open after shutdown_timeout were abandoned", "listener", s.name, "shutdown_timeout", cmp.Or(g.cfg.ShutdownTimeout, config.DefaultShutdownTimeout).String())
		err = nil
	}
	// fasthttp closes only a listener its Serve has already registered: a shutdown that comes
	// first would leave Serve blocked in Accept for good. Closing it here ends Serve either way.
	s.ln.Close()
	<-s.done
	if err == nil && !s.reported {
		err = s.err
	}
	if err != nil {
		return fmt.Errorf("gateway: shutdown %s: %w", s.name, err)
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
