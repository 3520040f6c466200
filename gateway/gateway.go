// Package gateway is the webhook gateway's HTTP side: the Fiber app with its management API in
// both seed dialects, the sync of declared subscriptions into the store, and the server's
// lifecycle.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/store"
)

// Version is the gateway's version, set at build time with
// -ldflags "-X github.com/webhookgw/gateway/gateway.Version=v1.2.3".
var Version = "dev"

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
	// NewID makes subscription ids; it defaults to random UUIDs.
	NewID func() string
}

// Gateway serves the gateway's HTTP API.
type Gateway struct {
	cfg     *config.Config
	store   store.Store
	plugins *plugins.Registry
	log     *slog.Logger
	now     func() time.Time
	newID   func() string
	admin   *tokenSet
	app     *fiber.App
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
	g.app = fiber.New(fiber.Config{
		AppName:               "webhook-gateway",
		DisableStartupMessage: true,
		BodyLimit:             int(max(opts.Config.Ingest.MaxBodyBytes, managementBodyLimit)),
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           120 * time.Second,
		ErrorHandler:          g.handleError,
		JSONEncoder:           json.Marshal,
		JSONDecoder:           json.Unmarshal,
	})
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

// ShutdownTimeout bounds how long Serve waits for requests in flight once its context ends.
const ShutdownTimeout = 10 * time.Second

// Serve serves on ln until ctx ends, then stops accepting and waits up to ShutdownTimeout for
// requests in flight. It returns nil after a clean shutdown.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	g.log.Info("listening", "addr", ln.Addr().String(), "version", Version)
	served := make(chan error, 1)
	go func() { served <- g.app.Listener(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := g.app.ShutdownWithContext(shutdownCtx)
	// fasthttp closes only a listener its Serve has already registered: a shutdown that comes
	// first would leave Serve blocked in Accept for good. Closing it here ends Serve either way.
	ln.Close()
	if serveErr := <-served; serveErr != nil && err == nil {
		err = serveErr
	}
	if err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}

// SyncSubscriptions makes the store's file-owned subscriptions match cfg.Subscriptions.
// cfg must have passed Validate.
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
		subs = append(subs, sub)
	}
	res, err := g.store.SyncFileSubscriptions(ctx, subs, g.now().UTC())
	if err != nil {
		return res, fmt.Errorf("sync subscriptions from the file: %w", err)
	}
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
