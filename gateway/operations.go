package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/webhookgw/gateway/store"
)

// Operating deliveries: GET /v1/deliveries (across subscriptions), POST /v1/webhooks/{id}/recover,
// POST /v1/events/{id}/replay and POST /v1/webhooks/{id}/test (recover and test under the
// dialect-2 path too).

// timeHint is how the operations routes say what time they take.
const timeHint = `must be an RFC 3339 time such as "2026-03-01T00:00:00Z", or a duration before now such as "90m", "2h" or "7d"`

// parseInstant reads a time as the operations routes take it: an RFC 3339 timestamp, or a
// duration before now in Go's form ("90m", "2h30m") or in whole days ("7d"). A "+" of an offset
// that a URL query decoded to a space is taken back.
func parseInstant(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if t, err := time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+")); err == nil {
		return t.UTC(), nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 36500 {
			return time.Time{}, errors.New(timeHint)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return time.Time{}, errors.New(timeHint)
		}
	}
	if d < 0 {
		return time.Time{}, errors.New(timeHint + " (a duration counts back from now: it cannot be negative)")
	}
	return now.Add(-d).UTC(), nil
}

// window is a [since, until) window of creation times; a zero until is open.
type window struct{ since, until time.Time }

// parseWindow reads since and until (each may be empty) into a window, naming each field at
// fault; since, when required, must be there.
func parseWindow(since, until string, required bool, now time.Time) (window, []FieldError) {
	var w window
	var errs []FieldError
	var err error
	switch {
	case since != "":
		if w.since, err = parseInstant(since, now); err != nil {
			errs = append(errs, FieldError{Field: "since", Message: err.Error()})
		}
	case required:
		errs = append(errs, FieldError{Field: "since", Message: "is required: " + timeHint})
	}
	if until != "" {
		if w.until, err = parseInstant(until, now); err != nil {
			errs = append(errs, FieldError{Field: "until", Message: err.Error()})
		}
	}
	if len(errs) == 0 && !w.since.IsZero() && !w.until.IsZero() && !w.since.Before(w.until) {
		errs = append(errs, FieldError{Field: "until", Message: fmt.Sprintf("must be after since (%s is not after %s)",
			w.until.Format(rfc3339Milli), w.since.Format(rfc3339Milli))})
	}
	return w, errs
}

// listAllDeliveries lists deliveries across subscriptions, newest first, filtered by status,
// subscription, event type and a window of creation times [since, until).
func (g *Gateway) listAllDeliveries(c *fiber.Ctx) error {
	now := g.now().UTC()
	filter := store.DeliveryFilter{
		SubscriptionID: c.Query("subscription"),
		Status:         store.DeliveryStatus(c.Query("status")),
		EventType:      c.Query("event_type"),
	}
	var errs []FieldError
	switch filter.Status {
	case "", store.Pending, store.Succeeded, store.Failed:
	default:
		errs = append(errs, FieldError{Field: "status", Message: "must be pending, succeeded or failed"})
	}
	if filter.EventType != "" {
		if err := g.cfg.Events.Check(filter.EventType); err != nil {
			errs = append(errs, FieldError{Field: "event_type", Message: err.Error()})
		}
	}
	w, werrs := parseWindow(c.Query("since"), c.Query("until"), false, now)
	errs = append(errs, werrs...)
	limit, err := pageLimit(c)
	if err != nil {
		var p *problemError
		errors.As(err, &p)
		errs = append(errs, p.Errors...)
	}
	if len(errs) > 0 {
		return invalid(errs...)
	}
	filter.Since, filter.Until = w.since, w.until
	ds, err := g.store.ListDeliveries(c.UserContext(), filter, store.ListOptions{Limit: limit, After: c.Query("after")})
	if errors.Is(err, store.ErrNotFound) {
		return invalid(FieldError{Field: "after", Message: "no delivery has this id"})
	}
	if err != nil {
		return err
	}
	if len(ds) > 0 {
		// The next page has the same filter, with a relative since or until resolved: the
		// window does not move between pages.
		q := url.Values{}
		for key, v := range map[string]string{"status": string(filter.Status), "subscription": filter.SubscriptionID,
			"event_type": filter.EventType} {
			if v != "" {
				q.Set(key, v)
			}
		}
		if !w.since.IsZero() {
			q.Set("since", w.since.Format(time.RFC3339Nano))
		}
		if !w.until.IsZero() {
			q.Set("until", w.until.Format(time.RFC3339Nano))
		}
		setNextLink(c, limit, len(ds), ds[len(ds)-1].ID, q)
	}
	views := make([]deliveryView, len(ds))
	for i, d := range ds {
		views[i] = newDeliveryView(d)
	}
	return c.JSON(views)
}

// recoverRequest is the body of POST /v1/webhooks/{id}/recover.
type recoverRequest struct {
	Since *string `json:"since"`
	Until *string `json:"until"`
}

// recoverView is the answer of a recovery: how many deliveries it scheduled again, and the
// window it read (until null: up to now).
type recoverView struct {
	Recovered int     `json:"recovered"`
	Since     string  `json:"since"`
	Until     *string `json:"until"`
}

// parseRecover checks a recovery's body against now.
func parseRecover(body []byte, now time.Time) (window, error) {
	var req recoverRequest
	if err := decodeStrictJSON(body, &req); err != nil {
		return window{}, err
	}
	var errs []FieldError
	for field, v := range map[string]*string{"since": req.Since, "until": req.Until} {
		if v != nil && strings.TrimSpace(*v) == "" {
			errs = append(errs, FieldError{Field: field, Message: "must not be empty: " + timeHint})
		}
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) })
		return window{}, invalid(errs...)
	}
	w, errs := parseWindow(deref(req.Since), deref(req.Until), true, now)
	if len(errs) > 0 {
		return window{}, invalid(errs...)
	}
	return w, nil
}

// recoverWebhook schedules again, now, every failed delivery of the subscription created in the
// window. They go through the claim like any due delivery: the subscription's order, slots and
// rate limit hold, and an inactive subscription's wait, paused, for its reactivation.
func (g *Gateway) recoverWebhook(c *fiber.Ctx) error {
	sub, err := g.subscription(c)
	if err != nil {
		return err
	}
	body, err := readBody(c, managementBodyLimit, newProblem(fiber.StatusRequestEntityTooLarge, "the request body is larger than 65536 bytes"))
	if err != nil {
		return err
	}
	now := g.now().UTC()
	w, err := parseRecover(body, now)
	if err != nil {
		return err
	}
	n, err := g.store.RecoverDeliveries(c.UserContext(), sub.ID, w.since, w.until, now)
	if errors.Is(err, store.ErrNotFound) {
		return notFound(sub.ID)
	}
	if err != nil {
		return err
	}
	if n > 0 {
		g.engine.Wake()
	}
	v := recoverView{Recovered: n, Since: w.since.Format(rfc3339Milli)}
	if !w.until.IsZero() {
		v.Until = formatOptional(&w.until, rfc3339Milli)
	}
	return c.Status(fiber.StatusAccepted).JSON(v)
}

// replayRequest is the body of POST /v1/events/{id}/replay.
type replayRequest struct {
	Subscription *string `json:"subscription"`
}

// parseReplay checks a replay's body and returns the subscription it names.
func parseReplay(body []byte) (string, error) {
	var req replayRequest
	if err := decodeStrictJSON(body, &req); err != nil {
		return "", err
	}
	switch {
	case req.Subscription == nil:
		return "", invalid(FieldError{Field: "subscription", Message: "is required: the id of the subscription to send the event to"})
	case strings.TrimSpace(*req.Subscription) == "":
		return "", invalid(FieldError{Field: "subscription", Message: "must not be empty"})
	}
	return *req.Subscription, nil
}

// replayEvent makes a new delivery of a stored event to one subscription, due now: a new
// message to the subscriber (a new webhook-id), with the event's payload.
func (g *Gateway) replayEvent(c *fiber.Ctx) error {
	eventID := c.Params("id")
	ev, _, err := g.store.GetEvent(c.UserContext(), eventID)
	if errors.Is(err, store.ErrNotFound) {
		return newProblem(fiber.StatusNotFound, fmt.Sprintf("no event has the id %q", eventID))
	}
	if err != nil {
		return err
	}
	body, err := readBody(c, managementBodyLimit, newProblem(fiber.StatusRequestEntityTooLarge, "the request body is larger than 65536 bytes"))
	if err != nil {
		return err
	}
	subID, err := parseReplay(body)
	if err != nil {
		return err
	}
	sub, err := g.store.GetSubscription(c.UserContext(), subID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound(subID)
	case err != nil:
		return err
	case !sub.Active:
		return newProblem(fiber.StatusConflict, fmt.Sprintf(
			"subscription %q is inactive: reactivate it first (POST /v1/webhooks/%s/reactivate)", sub.ID, sub.ID))
	case !receives(sub, ev.Type):
		return newProblem(fiber.StatusConflict, fmt.Sprintf(
			"subscription %q does not receive %s events (it receives %s)", sub.ID, ev.Type, strings.Join(sub.Events, ", ")))
	}
	d, err := g.store.ReplayEvent(c.UserContext(), ev.ID, sub.ID, g.newID(), g.now().UTC())
	if errors.Is(err, store.ErrNotFound) {
		return newProblem(fiber.StatusNotFound, fmt.Sprintf("event %q or subscription %q was deleted meanwhile", ev.ID, sub.ID))
	}
	if err != nil {
		return err
	}
	g.engine.Wake()
	c.Location("/v1/deliveries/" + d.ID)
	return c.Status(fiber.StatusAccepted).JSON(newDeliveryView(d))
}

// receives reports whether sub receives events of type t.
func receives(sub *store.Subscription, t string) bool {
	return slices.Contains(sub.Events, store.AllEvents) || slices.Contains(sub.Events, t)
}

// testRequest is the body of POST /v1/webhooks/{id}/test; it may be left out. eventType is an
// alias of type.
type testRequest struct {
	Type      *string `json:"type"`
	EventType *string `json:"eventType"`
}

// testView is a test event's attempt: the webhook-id it was sent with, its type, the attempt as
// the attempt log would show it, and the payload sent.
type testView struct {
	WebhookID string `json:"webhookId"`
	EventType string `json:"eventType"`
	attemptView
	Payload json.RawMessage `json:"payload"`
}

// parseTest checks a test's body (empty: no body) and returns the event type it asks for, ""
// when it names none.
func parseTest(body []byte) (string, error) {
	if strings.TrimSpace(string(body)) == "" {
		return "", nil
	}
	var req testRequest
	if err := decodeStrictJSON(body, &req); err != nil {
		return "", err
	}
	t, alias := deref(req.Type), deref(req.EventType)
	switch {
	case req.Type != nil && req.EventType != nil && t != alias:
		return "", invalid(FieldError{Field: "eventType", Message: "is another name for type; send one of them"})
	case req.Type == nil:
		t = alias
	}
	if (req.Type != nil || req.EventType != nil) && t == "" {
		return "", invalid(FieldError{Field: "type", Message: "must not be empty; leave it out for the subscription's first event type"})
	}
	return t, nil
}

// testWebhook sends a sample event to the subscription now, once, as a delivery's attempt would
// go, and answers 200 with the attempt, whatever the target answered. Nothing is stored. An
// inactive subscription can be tested too (before it is reactivated).
func (g *Gateway) testWebhook(c *fiber.Ctx) error {
	sub, err := g.subscription(c)
	if err != nil {
		return err
	}
	body, err := readBody(c, managementBodyLimit, newProblem(fiber.StatusRequestEntityTooLarge, "the request body is larger than 65536 bytes"))
	if err != nil {
		return err
	}
	eventType, err := parseTest(body)
	if err != nil {
		return err
	}
	switch {
	case eventType == "" && (len(sub.Events) == 0 || sub.Events[0] == store.AllEvents):
		eventType = g.cfg.Events.Types[0]
	case eventType == "":
		eventType = sub.Events[0]
	case g.cfg.Events.Check(eventType) != nil:
		return invalid(FieldError{Field: "type", Message: g.cfg.Events.Check(eventType).Error()})
	case !receives(sub, eventType):
		return invalid(FieldError{Field: "type", Message: fmt.Sprintf("subscription %q does not receive %s events; it receives %s",
			sub.ID, eventType, strings.Join(sub.Events, ", "))})
	}
	now := g.now().UTC()
	ev := &store.Event{ID: "test_" + g.newID(), Type: eventType, ReceivedAt: now}
	ev.Payload = samplePayload(ev.ID, eventType, now, g.newID)
	webhookID := "test_" + g.newID()
	a := g.engine.TestAttempt(c.UserContext(), sub, ev, webhookID)
	return c.JSON(testView{WebhookID: webhookID, EventType: eventType, attemptView: newAttemptView(a), Payload: ev.Payload})
}

// samplePayload is a plausible event of type eventType, in the seed's shape: id, type, created,
// then an object named by the type's first part ("transaction" for transaction.state.updated)
// with its own id, marked test_ like the event's. A state event's object has the seed's state
// (and a transaction its resultId).
func samplePayload(id, eventType string, now time.Time, newID func() string) []byte {
	subject, rest, _ := strings.Cut(eventType, ".")
	b := []byte(`{"id":`)
	b = strconv.AppendQuote(b, id)
	b = append(b, `,"type":`...)
	b = strconv.AppendQuote(b, eventType)
	b = append(b, `,"created":`...)
	b = strconv.AppendQuote(b, now.Format(rfc3339Offset))
	b = append(b, ',')
	b = strconv.AppendQuote(b, subject)
	b = append(b, `:{"id":`...)
	b = strconv.AppendQuote(b, "test_"+newID())
	if strings.HasPrefix(rest, "state.") || rest == "state" {
		b = append(b, `,"state":"completed"`...)
		if subject == "transaction" {
			b = append(b, `,"resultId":`...)
			b = strconv.AppendQuote(b, "test_"+newID())
		}
	}
	return append(b, "}}"...)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
