package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// routes registers every route. Management routes need an admin token.
func (g *Gateway) routes() {
	app := g.app
	app.Get("/healthz", g.healthz)
	app.Get("/readyz", g.readyz)
	if g.cfg.Telemetry.Metrics.Prometheus {
		// A store error leaves out the store's gauges (and is logged), not the whole scrape.
		app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(g.metrics.registry, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError,
			ErrorLog:      slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
		})))
	}

	admin := g.requireAdmin
	for _, prefix := range []string{"/v1/webhooks", "/id-scan/v1/webhooks"} {
		app.Post(prefix, admin, g.createWebhook)
		app.Get(prefix, admin, g.listWebhooks)
		app.Get(prefix+"/:id", admin, g.getWebhook)
		app.Put(prefix+"/:id", admin, g.replaceWebhook)
		app.Delete(prefix+"/:id", admin, g.deleteWebhook)
		app.Get(prefix+"/:id/deliveries", admin, g.listDeliveries)
		app.Post(prefix+"/:id/reactivate", admin, g.reactivateWebhook)
	}
	app.Post("/v1/events", g.ingest) // ingest tokens, not admin ones
	app.Get("/v1/events/:id", admin, g.getEvent)
	app.Get("/v1/deliveries/:id", admin, g.getDelivery)
	app.Post("/v1/deliveries/:id/retry", admin, g.retryDelivery)
	const registrations = "/api/WebhookRegistrations"
	app.Post(registrations, admin, g.createRegistration)
	app.Get(registrations, admin, g.listRegistrations)
	app.Get(registrations+"/:id", admin, g.getRegistration)
	app.Put(registrations+"/:id", admin, g.updateRegistration)
	app.Delete(registrations+"/:id", admin, g.deactivateRegistration)

	app.Use(func(c *fiber.Ctx) error {
		c.Locals(unmatchedRoute{}, true) // serverSpans names no route
		return newProblem(fiber.StatusNotFound, "no route for "+c.Method()+" "+c.Path())
	})
}

func (g *Gateway) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (g *Gateway) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
	defer cancel()
	if err := g.store.Ping(ctx); err != nil {
		g.log.Warn("readiness check failed", "err", err)
		return newProblem(fiber.StatusServiceUnavailable, "the store cannot be reached")
	}
	if !g.dispatch.running.Load() {
		return newProblem(fiber.StatusServiceUnavailable, "the dispatcher is not running")
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

// subscription loads the subscription named by the route's :id, or answers 404.
func (g *Gateway) subscription(c *fiber.Ctx) (*store.Subscription, error) {
	id := c.Params("id")
	sub, err := g.store.GetSubscription(c.UserContext(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(id)
	}
	return sub, err
}

func notFound(id string) error {
	return newProblem(fiber.StatusNotFound, fmt.Sprintf("no subscription has the id %q", id))
}

// errFileOwned is the 409 for changing a subscription that gateway.yaml declares.
func errFileOwned(id string) error {
	return newProblem(fiber.StatusConflict, fmt.Sprintf(
		"subscription %q is declared in gateway.yaml and can only be changed there", id))
}

// refuseFileOwned answers 409 before a change to a declared subscription is even read, so that
// its caller learns the rule rather than what is wrong with a body that could not apply.
func (g *Gateway) refuseFileOwned(c *fiber.Ctx) error {
	sub, err := g.subscription(c)
	if err != nil {
		return err
	}
	if sub.Source == store.SourceFile {
		return errFileOwned(sub.ID)
	}
	return nil
}

// updateOwned applies change to an API-owned subscription, answering 404 or 409 as fits.
func (g *Gateway) updateOwned(c *fiber.Ctx, change func(*store.Subscription) error) (*store.Subscription, error) {
	id := c.Params("id")
	sub, err := g.store.UpdateSubscription(c.UserContext(), id, func(sub *store.Subscription) error {
		if sub.Source == store.SourceFile {
			return errFileOwned(id)
		}
		if err := change(sub); err != nil {
			return err
		}
		sub.UpdatedAt = g.now().UTC()
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(id)
	}
	return sub, err
}

// pageLimit reads the limit query parameter of a list: 1 to 1000, 100 when absent.
func pageLimit(c *fiber.Ctx) (int, error) {
	v := c.Query("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, invalid(FieldError{Field: "limit", Message: "must be a whole number from 1 to 1000"})
	}
	return n, nil
}

// setNextLink sets a Link header to the next page when this one is full (there may be more):
// the same query, with after set to the page's last id.
func setNextLink(c *fiber.Ctx, limit, got int, lastID string, q url.Values) {
	if got < limit {
		return
	}
	q.Set("limit", strconv.Itoa(limit))
	q.Set("after", lastID)
	c.Set(fiber.HeaderLink, fmt.Sprintf(`<%s?%s>; rel="next"`, c.Path(), q.Encode()))
}

// listPage lists one page of subscriptions (limit, after) and sets the Link header.
func (g *Gateway) listPage(c *fiber.Ctx) ([]*store.Subscription, error) {
	limit, err := pageLimit(c)
	if err != nil {
		return nil, err
	}
	subs, err := g.store.ListSubscriptions(c.UserContext(), store.ListOptions{Limit: limit, After: c.Query("after")})
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid(FieldError{Field: "after", Message: "no subscription has this id"})
	}
	if err != nil {
		return nil, err
	}
	if len(subs) > 0 {
		setNextLink(c, limit, len(subs), subs[len(subs)-1].ID, url.Values{})
	}
	return subs, nil
}

// pluginRequest is a plugin as the API takes it.
type pluginRequest struct {
	Name   string          `json:"name"`
	Config json.RawMessage `json:"config"`
}

// pluginView is a plugin as the API shows it: its name only, since configs hold secrets.
type pluginView struct {
	Name string `json:"name"`
}

// checkPlugins validates requested plugins with the registry, strictly, as gateway.yaml's are.
func (g *Gateway) checkPlugins(reqs []pluginRequest) ([]store.Plugin, []FieldError) {
	var out []store.Plugin
	var errs []FieldError
	for i, p := range reqs {
		path := fmt.Sprintf("plugins[%d]", i)
		if p.Name == "" {
			errs = append(errs, FieldError{Field: path + ".name", Message: "is required"})
			continue
		}
		node, err := jsonNode(p.Config)
		var text string
		var urls []string
		if err == nil {
			urls, err = g.plugins.Check(p.Name, node)
		}
		for _, u := range urls {
			if uerr := g.cfg.Security.CheckURL(u); uerr != nil {
				errs = append(errs, FieldError{Field: path + ".config", Message: "the plugin's URL " + uerr.Error()})
			}
		}
		if err == nil {
			text, err = nodeText(node)
		}
		var ps config.Problems
		switch {
		case errors.As(err, &ps):
			for _, pr := range ps.Prefix(path + ".config") {
				errs = append(errs, FieldError{Field: pr.Path, Message: pr.Message})
			}
		case err != nil:
			errs = append(errs, FieldError{Field: path, Message: err.Error()})
		default:
			out = append(out, store.Plugin{Name: p.Name, Config: text})
		}
	}
	return out, errs
}

func pluginViews(ps []store.Plugin) []pluginView {
	if len(ps) == 0 {
		return nil
	}
	views := make([]pluginView, len(ps))
	for i, p := range ps {
		views[i] = pluginView{Name: p.Name}
	}
	return views
}

// checkURL applies the security rules to a target URL.
func (g *Gateway) checkURL(field, raw string) []FieldError {
	if err := g.cfg.Security.CheckURL(raw); err != nil {
		return []FieldError{{Field: field, Message: err.Error()}}
	}
	return nil
}
