package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// Dialect 1 (seed 000): POST/GET /v1/webhooks, GET/PUT/DELETE /v1/webhooks/{id}.

// webhookRequest is the body of POST and PUT /v1/webhooks.
type webhookRequest struct {
	URL     *string           `json:"url"`
	Events  []string          `json:"events"`
	Headers map[string]string `json:"headers"`
	Plugins []pluginRequest   `json:"plugins"`
	// DeliveryPolicy left out or null is the gateway's default policy.
	DeliveryPolicy json.RawMessage `json:"deliveryPolicy"`
}

// webhookView is a subscription as dialect 1 shows it: the seed's fields, in its order, then
// the gateway's own: first those a request sets (plugins, deliveryPolicy), then its state.
type webhookView struct {
	ID        string            `json:"id"`
	URL       string            `json:"url"`
	Events    []string          `json:"events"`
	Headers   map[string]string `json:"headers"`
	UpdatedAt string            `json:"updatedAt"`
	CreatedAt string            `json:"createdAt"`

	Plugins              []pluginView `json:"plugins,omitempty"`
	DeliveryPolicy       policyView   `json:"deliveryPolicy"`
	Kind                 store.Kind   `json:"kind"` // webhook, or registration (dialect 2)
	Source               store.Source `json:"source"`
	IsActive             bool         `json:"isActive"`
	DeactivatedAt        *string      `json:"deactivatedAt"`
	IsInErrorState       bool         `json:"isInErrorState"`
	ErrorStateReason     *string      `json:"errorStateReason"`
	DetectedErrorStateAt *string      `json:"detectedErrorStateAt"`
}

// rfc3339Offset is the seed's time format: RFC 3339 with a numeric offset, "+00:00" for UTC.
const rfc3339Offset = "2006-01-02T15:04:05-07:00"

func (g *Gateway) webhookView(s *store.Subscription) webhookView {
	events := s.Events
	if len(events) == 1 && events[0] == store.AllEvents {
		events = g.cfg.Events.Types
	}
	headers := s.Headers
	if len(headers) == 0 {
		headers = nil
	}
	return webhookView{
		ID:                   s.ID,
		URL:                  s.URL,
		Events:               events,
		Headers:              headers,
		UpdatedAt:            s.UpdatedAt.UTC().Format(rfc3339Offset),
		CreatedAt:            s.CreatedAt.UTC().Format(rfc3339Offset),
		Plugins:              pluginViews(s.Plugins),
		DeliveryPolicy:       newPolicyView(s.Policy),
		Kind:                 s.Kind,
		Source:               s.Source,
		IsActive:             s.Active,
		DeactivatedAt:        formatOptional(s.DeactivatedAt, rfc3339Offset),
		IsInErrorState:       s.InErrorState,
		ErrorStateReason:     optionalString(s.ErrorStateReason),
		DetectedErrorStateAt: formatOptional(s.DetectedErrorStateAt, rfc3339Offset),
	}
}

// parseWebhook validates a dialect-1 request into the fields it sets.
func (g *Gateway) parseWebhook(c *fiber.Ctx) (*store.Subscription, error) {
	var req webhookRequest
	if err := decodeJSON(c, &req); err != nil {
		return nil, err
	}
	var errs []FieldError
	sub := &store.Subscription{}
	if req.URL == nil {
		errs = append(errs, FieldError{Field: "url", Message: "is required"})
	} else {
		sub.URL = *req.URL
		errs = append(errs, g.checkURL("url", sub.URL)...)
	}
	// Events stays nil when the request names none: a new webhook then gets events.default,
	// and a registration being replaced keeps receiving every type.
	if len(req.Events) > 0 {
		sub.Events = dedupe(req.Events)
	}
	for i, t := range sub.Events {
		if err := g.cfg.Events.Check(t); err != nil {
			errs = append(errs, FieldError{Field: fmt.Sprintf("events[%d]", i), Message: err.Error()})
		}
	}
	if len(req.Headers) > 50 {
		errs = append(errs, FieldError{Field: "headers", Message: "must have at most 50 headers"})
	}
	for _, name := range slices.Sorted(maps.Keys(req.Headers)) {
		if err := config.CheckSubscriptionHeader(name, req.Headers[name]); err != nil {
			errs = append(errs, FieldError{Field: "headers." + name, Message: err.Error()})
		}
	}
	if len(req.Headers) > 0 {
		sub.Headers = req.Headers
	}
	plugins, perrs := g.checkPlugins(req.Plugins)
	sub.Plugins = plugins
	errs = append(errs, perrs...)
	policy, perrs := g.parsePolicy(req.DeliveryPolicy)
	if len(perrs) == 0 {
		policy.apply(&sub.Policy) // onto the default: dialect 1 replaces the whole policy
		perrs = checkPolicy(sub.Policy)
	}
	errs = append(errs, perrs...)
	if len(errs) > 0 {
		return nil, invalid(errs...)
	}
	return sub, nil
}

func (g *Gateway) createWebhook(c *fiber.Ctx) error {
	sub, err := g.parseWebhook(c)
	if err != nil {
		return err
	}
	now := g.now().UTC()
	sub.ID, sub.Kind, sub.Source, sub.Active = g.newID(), store.KindWebhook, store.SourceAPI, true
	sub.CreatedAt, sub.UpdatedAt = now, now
	if sub.Events == nil {
		sub.Events = g.cfg.Events.Default
	}
	if err := g.store.CreateSubscription(c.UserContext(), sub); err != nil {
		return err
	}
	c.Location(strings.TrimSuffix(c.Path(), "/") + "/" + sub.ID)
	return c.Status(fiber.StatusCreated).JSON(g.webhookView(sub))
}

func (g *Gateway) listWebhooks(c *fiber.Ctx) error {
	subs, err := g.listPage(c)
	if err != nil {
		return err
	}
	views := make([]webhookView, len(subs))
	for i, s := range subs {
		views[i] = g.webhookView(s)
	}
	return c.JSON(views)
}

func (g *Gateway) getWebhook(c *fiber.Ctx) error {
	sub, err := g.subscription(c)
	if err != nil {
		return err
	}
	return c.JSON(g.webhookView(sub))
}

// replaceWebhook replaces the target, events, headers, plugins and delivery policy; the state
// is kept. Without events, a webhook gets events.default and a registration keeps every type;
// without deliveryPolicy, the subscription gets the default policy.
func (g *Gateway) replaceWebhook(c *fiber.Ctx) error {
	if err := g.refuseFileOwned(c); err != nil {
		return err
	}
	want, err := g.parseWebhook(c)
	if err != nil {
		return err
	}
	sub, err := g.updateOwned(c, func(sub *store.Subscription) error {
		if want.Events == nil {
			want.Events = g.cfg.Events.Default
			if slices.Equal(sub.Events, []string{store.AllEvents}) {
				want.Events = sub.Events
			}
		}
		store.CopyDeclaration(sub, want)
		return nil
	})
	if err != nil {
		return err
	}
	return c.JSON(g.webhookView(sub))
}

// deleteWebhook removes the subscription, a registration too (dialect 2's DELETE keeps it).
func (g *Gateway) deleteWebhook(c *fiber.Ctx) error {
	id := c.Params("id")
	err := g.store.DeleteSubscription(c.UserContext(), id, g.now().UTC())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound(id)
	case errors.Is(err, store.ErrOwnedByFile):
		return errFileOwned(id)
	case err != nil:
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func formatOptional(t *time.Time, layout string) *string {
	if t == nil {
		return nil
	}
	s := t.UTC().Format(layout)
	return &s
}

func optionalString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
