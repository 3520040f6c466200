package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// The routes come in sets, so that each listener serves its own: with one listener, it
// serves them all; with admin.listen, the main listener serves health and ingest, and the
// admin listener health, metrics and management.

// healthRoutes registers the probes, which need no token.
func (g *Gateway) healthRoutes(app *fiber.App) {
	app.Get("/healthz", g.healthz)
	app.Get("/readyz", g.readyz)
}

// metricsRoute registers GET /metrics, unless telemetry.metrics.prometheus is off.
func (g *Gateway) metricsRoute(app *fiber.App) {
	if g.cfg.Telemetry.Metrics.Prometheus {
		// A store error leaves out the store's gauges (and is logged), not the whole scrape.
		scrape := adaptor.HTTPHandler(promhttp.HandlerFor(g.metrics.registry, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError,
			ErrorLog:      slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
		}))
		app.Get("/metrics", func(c *fiber.Ctx) error {
			// A scrape has no body. The adaptor would read one whole, whatever its size: drop it
			// unread (closeUnreadBodies closes the connection).
			c.Request().ResetBody()
			return scrape(c)
		})
	}
}

// ingestRoutes registers POST /v1/events, which takes ingest tokens, not admin ones.
func (g *Gateway) ingestRoutes(app *fiber.App) {
	app.Post("/v1/events", g.ingest)
}

// managementRoutes registers the management API: both dialects, events and deliveries, and
// GET /openapi.json. Every route but that one needs an admin token.
func (g *Gateway) managementRoutes(app *fiber.App) {
	g.openAPIRoute(app) // no token: it describes the routes, nothing more
	admin := g.requireAdmin
	for _, prefix := range []string{"/v1/webhooks", "/id-scan/v1/webhooks"} {
		app.Post(prefix, admin, g.createWebhook)
		app.Get(prefix, admin, g.listWebhooks)
		app.Get(prefix+"/:id", admin, g.getWebhook)
		app.Put(prefix+"/:id", admin, g.replaceWebhook)
		app.Delete(prefix+"/:id", admin, g.deleteWebhook)
		app.Get(prefix+"/:id/deliveries", admin, g.listDeliveries)
		app.Post(prefix+"/:id/reactivate", admin, g.reactivateWebhook)
		app.Post(prefix+"/:id/recover", admin, g.recoverWebhook)
		app.Post(prefix+"/:id/test", admin, g.testWebhook)
	}
	app.Get("/v1/events/:id", admin, g.getEvent)
	app.Post("/v1/events/:id/replay", admin, g.replayEvent)
	app.Get("/v1/deliveries", admin, g.listAllDeliveries)
	app.Get("/v1/deliveries/:id", admin, g.getDelivery)
	app.Post("/v1/deliveries/:id/retry", admin, g.retryDelivery)
	app.Get("/v1/stats", admin, g.getStats)
	const registrations = "/api/WebhookRegistrations"
	app.Post(registrations, admin, g.createRegistration)
	app.Get(registrations, admin, g.listRegistrations)
	app.Get(registrations+"/:id", admin, g.getRegistration)
	app.Put(registrations+"/:id", admin, g.updateRegistration)
	app.Delete(registrations+"/:id", admin, g.deactivateRegistration)
	app.Post(registrations+"/:id/recover", admin, g.recoverWebhook)
	app.Post(registrations+"/:id/test", admin, g.testWebhook)
}

// noRoute answers a request no route took: 405 with an Allow header when its path has routes
// for other methods, else 404.
func noRoute(c *fiber.Ctx) error {
	c.Locals(unmatchedRoute{}, true) // serverSpans names no route
	// Asked for the next route, Fiber's router finds none; it says 405, and sets Allow, when
	// the path has routes for other methods.
	if err := c.Next(); errors.Is(err, fiber.ErrMethodNotAllowed) {
		return newProblem(fiber.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; allowed: %s",
			c.Method(), c.Path(), c.GetRespHeader(fiber.HeaderAllow)))
	}
	return newProblem(fiber.StatusNotFound, "no route for "+c.Method()+" "+c.Path())
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
	if err := g.recovering.Load(); err != nil {
		return newProblem(fiber.StatusServiceUnavailable, fmt.Sprintf(
			"starting: the delivery leases could not be recovered (%v); trying again", *err))
	}
	if err := g.store.Writable(ctx); err != nil {
		g.storeWrote(err)
		return newProblem(fiber.StatusServiceUnavailable, fmt.Sprintf("the store cannot write: %v", err))
	}
	g.storeWrote(nil)
	if !g.engine.Ready() {
		return newProblem(fiber.StatusServiceUnavailable, "the delivery engine is not running")
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
	if err == nil {
		// A reactivation's deliveries, or a raised max_in_flight, go out at once.
		g.engine.Wake()
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

// policyRequest is the deliveryPolicy object of a request. Each key is left out, null (the
// gateway's default) or a value; raw messages tell the three apart.
type policyRequest struct {
	MaxInFlight json.RawMessage `json:"maxInFlight"`
	RateLimit   json.RawMessage `json:"rateLimit"`
	Ordering    json.RawMessage `json:"ordering"`
}

// policyView is a subscription's deliveryPolicy as the API shows it: every key, null where
// the gateway's default applies (delivery.max_in_flight_per_subscription, no rate limit,
// concurrent delivery). It can be sent back as it is.
type policyView struct {
	MaxInFlight *int     `json:"maxInFlight"`
	RateLimit   *float64 `json:"rateLimit"`
	Ordering    *string  `json:"ordering"`
}

func newPolicyView(p store.Policy) policyView {
	var v policyView
	if p.MaxInFlight > 0 {
		v.MaxInFlight = &p.MaxInFlight
	}
	if p.RateLimit > 0 {
		v.RateLimit = &p.RateLimit
	}
	v.Ordering = optionalString(string(p.Ordering))
	return v
}

// policyPatch is a request's deliveryPolicy, checked: what it changes in a stored policy.
type policyPatch struct {
	// reset: deliveryPolicy is null, every key goes back to the gateway's default.
	reset bool
	// A key the request sends, null as the zero value (the default); nil when left out.
	maxInFlight *int
	rateLimit   *float64
	ordering    *store.Ordering
}

// apply changes p as the patch says: keys left out keep their value.
func (pp policyPatch) apply(p *store.Policy) {
	if pp.reset {
		*p = store.Policy{}
	}
	if pp.maxInFlight != nil {
		p.MaxInFlight = *pp.maxInFlight
	}
	if pp.rateLimit != nil {
		p.RateLimit = *pp.rateLimit
	}
	if pp.ordering != nil {
		p.Ordering = *pp.ordering
	}
}

// parsePolicy checks a request's deliveryPolicy (nil when the request has none) with the
// rules gateway.yaml's max_in_flight, rate_limit and ordering follow, naming each field at
// fault as deliveryPolicy.<key>.
func (g *Gateway) parsePolicy(raw json.RawMessage) (policyPatch, []FieldError) {
	var pp policyPatch
	if raw == nil {
		return pp, nil
	}
	if isNull(raw) {
		pp.reset = true
		return pp, nil
	}
	const field = "deliveryPolicy"
	var req policyRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return pp, []FieldError{{Field: field + "." + strings.Trim(name, `"`), Message: "unknown field"}}
		}
		return pp, []FieldError{{Field: field, Message: "must be an object such as {\"maxInFlight\": 16, \"rateLimit\": 50, \"ordering\": \"fifo\"}, or null"}}
	}
	var errs []FieldError
	if req.MaxInFlight != nil {
		var n int // null: 0, the default
		if !isNull(req.MaxInFlight) {
			if json.Unmarshal(req.MaxInFlight, &n) != nil {
				n = 0 // not a whole number: refused with the bounds
			}
			if err := g.cfg.Delivery.CheckMaxInFlight(n); err != nil {
				errs = append(errs, FieldError{Field: field + ".maxInFlight", Message: err.Error() + ", or null"})
			}
		}
		pp.maxInFlight = &n
	}
	if req.RateLimit != nil {
		var r float64 // null: 0, no limit
		if !isNull(req.RateLimit) {
			if json.Unmarshal(req.RateLimit, &r) != nil {
				r = 0 // not a number: refused with the bounds
			}
			if err := config.CheckRateLimit(r); err != nil {
				errs = append(errs, FieldError{Field: field + ".rateLimit", Message: "must be a number " + strings.TrimPrefix(err.Error(), "must be ") + ", or null"})
			}
		}
		pp.rateLimit = &r
	}
	if req.Ordering != nil {
		var o string // null: "", concurrent delivery
		if !isNull(req.Ordering) {
			if json.Unmarshal(req.Ordering, &o) != nil || (o != "" && o != config.OrderingFIFO) {
				errs = append(errs, FieldError{Field: field + ".ordering", Message: `must be "fifo" or null`})
			}
		}
		ordering := store.Ordering(o)
		pp.ordering = &ordering
	}
	return pp, errs
}

// checkPolicy checks a subscription's policy as a whole, once a request's patch is applied:
// fifo delivers one at a time, so it goes with no other maxInFlight than 1.
func checkPolicy(p store.Policy) []FieldError {
	if p.Ordering == store.FIFO && p.MaxInFlight > 1 {
		return []FieldError{{Field: "deliveryPolicy.maxInFlight", Message: fmt.Sprintf(
			`must be 1 or null with ordering "fifo", which delivers one at a time (it is %d)`, p.MaxInFlight)}}
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}
