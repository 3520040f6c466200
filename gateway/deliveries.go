package gateway

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/webhookgw/gateway/store"
)

// Events, deliveries and attempts: GET /v1/events/{id}, GET /v1/webhooks/{id}/deliveries,
// GET /v1/deliveries/{id}, POST /v1/deliveries/{id}/retry, POST /v1/webhooks/{id}/reactivate.

// deliveryView is a delivery as the API shows it. Its id is the webhook-id header's value.
type deliveryView struct {
	ID             string               `json:"id"`
	EventID        string               `json:"eventId"`
	EventType      string               `json:"eventType"`
	SubscriptionID string               `json:"subscriptionId"`
	Status         store.DeliveryStatus `json:"status"`
	Attempts       int                  `json:"attempts"`
	NextAttemptAt  *string              `json:"nextAttemptAt"`
	LastStatusCode *int                 `json:"lastStatusCode"`
	LastError      *string              `json:"lastError"`
	CreatedAt      string               `json:"createdAt"`
	UpdatedAt      string               `json:"updatedAt"`
	FinishedAt     *string              `json:"finishedAt"`
	AttemptLog     []attemptView        `json:"attemptLog,omitzero"` // nil (left out) in lists; [] for a delivery with no attempt yet
}

// attemptView is one HTTP attempt. responseBody is the first 1 KiB of the answer, as text when
// it is UTF-8, else base64 (responseBodyEncoding says which).
type attemptView struct {
	At                   string  `json:"at"`
	DurationMs           float64 `json:"durationMs"`
	StatusCode           *int    `json:"statusCode"`
	Error                *string `json:"error"`
	ResponseBody         *string `json:"responseBody"`
	ResponseBodyEncoding string  `json:"responseBodyEncoding,omitempty"`
	TraceID              *string `json:"traceId"`
}

// eventView is an event with its deliveries. payload is the exact JSON delivered.
type eventView struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	ReceivedAt string          `json:"receivedAt"`
	Payload    json.RawMessage `json:"payload"`
	Deliveries []deliveryView  `json:"deliveries"`
}

// rfc3339Milli is the time format of the delivery routes.
const rfc3339Milli = "2006-01-02T15:04:05.000Z07:00"

func newDeliveryView(d *store.Delivery) deliveryView {
	v := deliveryView{
		ID:             d.ID,
		EventID:        d.EventID,
		EventType:      d.EventType,
		SubscriptionID: d.SubscriptionID,
		Status:         d.Status,
		Attempts:       d.Attempts,
		NextAttemptAt:  formatOptional(d.NextAttemptAt, rfc3339Milli),
		LastError:      optionalString(d.LastError),
		CreatedAt:      d.CreatedAt.UTC().Format(rfc3339Milli),
		UpdatedAt:      d.UpdatedAt.UTC().Format(rfc3339Milli),
		FinishedAt:     formatOptional(d.FinishedAt, rfc3339Milli),
	}
	if d.LastStatusCode != 0 {
		v.LastStatusCode = &d.LastStatusCode
	}
	return v
}

func newAttemptView(a store.Attempt) attemptView {
	v := attemptView{
		At:         a.At.UTC().Format(rfc3339Milli),
		DurationMs: float64(a.Duration.Microseconds()) / 1000,
		Error:      optionalString(a.Error),
		TraceID:    optionalString(a.TraceID),
	}
	if a.StatusCode != 0 {
		v.StatusCode = &a.StatusCode
	}
	if a.ResponseBody != nil {
		body := string(a.ResponseBody)
		if !utf8.ValidString(body) {
			body, v.ResponseBodyEncoding = base64.StdEncoding.EncodeToString(a.ResponseBody), "base64"
		}
		v.ResponseBody = &body
	}
	return v
}

func (g *Gateway) getEvent(c *fiber.Ctx) error {
	id := c.Params("id")
	ev, ds, err := g.store.GetEvent(c.UserContext(), id)
	if errors.Is(err, store.ErrNotFound) {
		return newProblem(fiber.StatusNotFound, fmt.Sprintf("no event has the id %q", id))
	}
	if err != nil {
		return err
	}
	v := eventView{
		ID:         ev.ID,
		Type:       ev.Type,
		ReceivedAt: ev.ReceivedAt.UTC().Format(rfc3339Milli),
		Payload:    ev.Payload,
		Deliveries: make([]deliveryView, len(ds)),
	}
	for i, d := range ds {
		v.Deliveries[i] = newDeliveryView(d)
	}
	return c.JSON(v)
}

func (g *Gateway) listDeliveries(c *fiber.Ctx) error {
	sub, err := g.subscription(c)
	if err != nil {
		return err
	}
	status := store.DeliveryStatus(c.Query("status"))
	switch status {
	case "", store.Pending, store.Succeeded, store.Failed:
	default:
		return invalid(FieldError{Field: "status", Message: "must be pending, succeeded or failed"})
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	ds, err := g.store.ListDeliveries(c.UserContext(), store.DeliveryFilter{SubscriptionID: sub.ID, Status: status}, store.ListOptions{Limit: limit, After: c.Query("after")})
	if errors.Is(err, store.ErrNotFound) {
		return invalid(FieldError{Field: "after", Message: "no delivery has this id"})
	}
	if err != nil {
		return err
	}
	if len(ds) > 0 {
		q := url.Values{}
		if status != "" {
			q.Set("status", string(status))
		}
		setNextLink(c, limit, len(ds), ds[len(ds)-1].ID, q)
	}
	views := make([]deliveryView, len(ds))
	for i, d := range ds {
		views[i] = newDeliveryView(d)
	}
	return c.JSON(views)
}

func (g *Gateway) getDelivery(c *fiber.Ctx) error {
	id := c.Params("id")
	d, attempts, err := g.store.GetDelivery(c.UserContext(), id)
	if errors.Is(err, store.ErrNotFound) {
		return newProblem(fiber.StatusNotFound, fmt.Sprintf("no delivery has the id %q", id))
	}
	if err != nil {
		return err
	}
	v := newDeliveryView(d)
	v.AttemptLog = make([]attemptView, len(attempts))
	for i, a := range attempts {
		v.AttemptLog[i] = newAttemptView(a)
	}
	return c.JSON(v)
}

// retryDelivery schedules a delivery again, now, whatever its status. One that had run out
// of retries gets one more round of attempts.
func (g *Gateway) retryDelivery(c *fiber.Ctx) error {
	id := c.Params("id")
	d, err := g.store.RetryDelivery(c.UserContext(), id, g.now().UTC())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return newProblem(fiber.StatusNotFound, fmt.Sprintf("no delivery has the id %q", id))
	case errors.Is(err, store.ErrSubscriptionGone):
		return newProblem(fiber.StatusConflict, fmt.Sprintf("the subscription of delivery %q was deleted: there is nowhere to send it", id))
	case err != nil:
		return err
	}
	g.engine.Wake()
	return c.Status(fiber.StatusAccepted).JSON(newDeliveryView(d))
}

// reactivateWebhook clears a subscription's error state and reactivates it, whoever owns it:
// it is state, not declaration.
func (g *Gateway) reactivateWebhook(c *fiber.Ctx) error {
	id := c.Params("id")
	sub, err := g.store.UpdateSubscription(c.UserContext(), id, func(sub *store.Subscription) error {
		store.Reactivate(sub)
		sub.UpdatedAt = g.now().UTC()
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return notFound(id)
	}
	if err != nil {
		return err
	}
	g.engine.Wake()
	return c.JSON(g.webhookView(sub))
}
