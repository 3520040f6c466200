package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

// The delivery tests name a delivery by its event and subscription ("e1/a") and a time by its
// offset from base ("+5m0s"), so that a failure reads like the test. Every time is a whole
// number of milliseconds after base, which every backend keeps exactly.

// at is base plus d.
func at(d time.Duration) time.Time { return base.Add(d) }

// ptr returns a pointer to t.
func ptr(t time.Time) *time.Time { return &t }

var lastID atomic.Int64

// newID makes delivery ids unique across the suite.
func newID() string { return fmt.Sprintf("dlv-%04d", lastID.Add(1)) }

// policy is a valid delivery configuration: error state after 3 failed attempts, deactivation
// a day later.
var policy = store.ErrorPolicy{ErrorStateAfter: 3, DisableAfter: 24 * time.Hour}

// subscriber creates an active subscription to events.
func subscriber(t *testing.T, s store.Store, id string, events ...string) *store.Subscription {
	t.Helper()
	sub := sample(id, base)
	sub.Events = events
	mustCreate(t, s, sub)
	return sub
}

func event(id, typ string, received time.Time) *store.Event {
	return &store.Event{ID: id, Type: typ, Payload: []byte(`{"id":"` + id + `"}`), ReceivedAt: received}
}

func mustIngest(t *testing.T, s store.Store, events ...*store.Event) []store.IngestResult {
	t.Helper()
	res, err := s.IngestEvents(context.Background(), events, store.IngestOptions{NewID: newID})
	if err != nil {
		t.Fatalf("IngestEvents: %v", err)
	}
	return res
}

// deliveryOf returns the id of the delivery of eventID to subID.
func deliveryOf(t *testing.T, s store.Store, eventID, subID string) string {
	t.Helper()
	_, ds, err := s.GetEvent(context.Background(), eventID)
	if err != nil {
		t.Fatalf("GetEvent(%s): %v", eventID, err)
	}
	for _, d := range ds {
		if d.SubscriptionID == subID {
			return d.ID
		}
	}
	t.Fatalf("event %s has no delivery to %s", eventID, subID)
	return ""
}

func mustDelivery(t *testing.T, s store.Store, id string) (*store.Delivery, []store.Attempt) {
	t.Helper()
	d, attempts, err := s.GetDelivery(context.Background(), id)
	if err != nil {
		t.Fatalf("GetDelivery(%s): %v", id, err)
	}
	return d, attempts
}

func name(d *store.Delivery) string { return d.EventID + "/" + d.SubscriptionID }

// round is what one ClaimDeliveries call leased, for a test to name and complete.
type round struct {
	t *testing.T
	// names are the claims, named, in the order returned.
	names   []string
	claims  map[string]*store.Claim
	nextDue map[string]time.Time
}

// claim returns the claim of the named delivery ("e1/a"), which must be in the round.
func (r round) claim(name string) *store.Claim {
	r.t.Helper()
	c, ok := r.claims[name]
	if !ok {
		r.t.Fatalf("%s was not claimed; the round claimed %q", name, r.names)
	}
	return c
}

// lease returns the lease of the named delivery's claim.
func (r round) lease(name string) store.Lease {
	r.t.Helper()
	c := r.claim(name)
	return store.Lease{DeliveryID: c.Delivery.ID, Token: c.Token}
}

// claim calls ClaimDeliveries with opts.
func claim(t *testing.T, s store.Store, opts store.ClaimOptions) round {
	t.Helper()
	res, err := s.ClaimDeliveries(context.Background(), opts)
	if err != nil {
		t.Fatalf("ClaimDeliveries: %v", err)
	}
	r := round{t: t, claims: make(map[string]*store.Claim), nextDue: res.NextDue}
	for _, c := range res.Claims {
		n := name(c.Delivery)
		if _, twice := r.claims[n]; twice {
			t.Fatalf("ClaimDeliveries returned %s twice", n)
		}
		r.names = append(r.names, n)
		r.claims[n] = c
	}
	return r
}

// claimOf claims, at now and leased until until, up to limit due deliveries of each of subs.
func claimOf(t *testing.T, s store.Store, now, until time.Time, limit int, subs ...string) round {
	t.Helper()
	opts := store.ClaimOptions{Now: now, LeaseUntil: until}
	for _, id := range subs {
		opts.Subscriptions = append(opts.Subscriptions, store.SubscriptionClaim{ID: id, Limit: limit})
	}
	return claim(t, s, opts)
}

// claimAt claims, at now and leased for an hour, up to 100 due deliveries of every stored
// subscription (fifo ones as fifo), as an engine that knows them all does.
func claimAt(t *testing.T, s store.Store, now time.Time) round {
	t.Helper()
	subs, err := s.ListSubscriptions(context.Background(), store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatalf("ListSubscriptions: %v", err)
	}
	opts := store.ClaimOptions{Now: now, LeaseUntil: now.Add(time.Hour)}
	for _, sub := range subs {
		opts.Subscriptions = append(opts.Subscriptions,
			store.SubscriptionClaim{ID: sub.ID, Limit: 100, FIFO: sub.Policy.Ordering == store.FIFO})
	}
	return claim(t, s, opts)
}

// wantList fails unless got is want, in order.
func wantList(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// wantSet fails unless got is want, in any order.
func wantSet(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	wantList(t, what, slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))...)
}

// complete completes outcomes at now; every one must apply.
func complete(t *testing.T, s store.Store, now time.Time, outcomes ...*store.Outcome) {
	t.Helper()
	if stale := completeStale(t, s, now, outcomes...); len(stale) != 0 {
		t.Fatalf("CompleteDeliveries refused %q as stale", stale)
	}
}

// completeStale completes outcomes at now and returns the ids refused as stale.
func completeStale(t *testing.T, s store.Store, now time.Time, outcomes ...*store.Outcome) []string {
	t.Helper()
	stale, err := s.CompleteDeliveries(context.Background(), outcomes, policy, now)
	if err != nil {
		t.Fatalf("CompleteDeliveries: %v", err)
	}
	return stale
}

// attempts returns one attempt per status code, a second apart from start; 0 is a connection
// error.
func attempts(start time.Time, codes ...int) []store.Attempt {
	as := make([]store.Attempt, len(codes))
	for i, code := range codes {
		as[i] = store.Attempt{At: start.Add(time.Duration(i) * time.Second), Duration: 150 * time.Millisecond,
			StatusCode: code, ResponseBody: fmt.Appendf(nil, "body %d", i), TraceID: fmt.Sprintf("trace-%d", i)}
		if code == 0 {
			as[i].Error, as[i].ResponseBody = "connection refused", nil
		}
	}
	return as
}

// success is a round of c that succeeded at once.
func success(c *store.Claim, when time.Time) *store.Outcome {
	return &store.Outcome{DeliveryID: c.Delivery.ID, SubscriptionID: c.Delivery.SubscriptionID, Token: c.Token,
		Attempts: attempts(when, 200), Succeeded: true}
}

// failure is a round of c whose every attempt failed; next schedules a retry, nil gives up.
func failure(c *store.Claim, when time.Time, next *time.Time, codes ...int) *store.Outcome {
	return &store.Outcome{DeliveryID: c.Delivery.ID, SubscriptionID: c.Delivery.SubscriptionID, Token: c.Token,
		Attempts: attempts(when, codes...), NextAttemptAt: next, Reason: fmt.Sprintf("HTTP %d from target", codes[len(codes)-1])}
}

func rel(tm *time.Time) string {
	if tm == nil {
		return "-"
	}
	if d := tm.Sub(base); d < 0 {
		return d.String()
	}
	return "+" + tm.Sub(base).String()
}

// state describes what the tests check of a delivery.
func state(d *store.Delivery) string {
	return fmt.Sprintf("%s attempts=%d step=%d next=%s finished=%s code=%d error=%q",
		d.Status, d.Attempts, d.Step, rel(d.NextAttemptAt), rel(d.FinishedAt), d.LastStatusCode, d.LastError)
}

func wantState(t *testing.T, s store.Store, id, want string) {
	t.Helper()
	d, _ := mustDelivery(t, s, id)
	if got := state(d); got != want {
		t.Fatalf("delivery %s (%s)\n got: %s\nwant: %s", id, name(d), got, want)
	}
}

// health describes a subscription's error state.
func health(sub *store.Subscription) string {
	return fmt.Sprintf("active=%t deactivated=%s error=%t reason=%q detected=%s failures=%d", sub.Active,
		rel(sub.DeactivatedAt), sub.InErrorState, sub.ErrorStateReason, rel(sub.DetectedErrorStateAt), sub.ConsecutiveFailures)
}

func wantHealth(t *testing.T, s store.Store, id, want string) {
	t.Helper()
	sub, err := s.GetSubscription(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got := health(sub); got != want {
		t.Fatalf("subscription %s\n got: %s\nwant: %s", id, got, want)
	}
}

// dueTimes describes a map of subscriptions to times, sorted: "a:+1m0s b:+5m0s".
func dueTimes(m map[string]time.Time) string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(m)) {
		tm := m[id]
		parts = append(parts, id+":"+rel(&tm))
	}
	return strings.Join(parts, " ")
}

// wantDue fails unless DueSubscriptions at now is want (as dueTimes writes it).
func wantDue(t *testing.T, s store.Store, now time.Time, want string) {
	t.Helper()
	due, err := s.DueSubscriptions(context.Background(), now)
	if err != nil {
		t.Fatalf("DueSubscriptions: %v", err)
	}
	if got := dueTimes(due); got != want {
		t.Fatalf("DueSubscriptions(%s): got %q, want %q", rel(&now), got, want)
	}
}

// wantNextDue fails unless the round's NextDue is want (as dueTimes writes it).
func wantNextDue(t *testing.T, r round, want string) {
	t.Helper()
	if got := dueTimes(r.nextDue); got != want {
		t.Fatalf("NextDue of a round that claimed %q: got %q, want %q", r.names, got, want)
	}
}

// wantLogAgrees fails unless the delivery's attempts count is the length of its attempt log.
func wantLogAgrees(t *testing.T, s store.Store, id string) {
	t.Helper()
	d, log := mustDelivery(t, s, id)
	if d.Attempts != len(log) {
		t.Fatalf("delivery %s (%s): attempts=%d, but %d in the attempt log", id, name(d), d.Attempts, len(log))
	}
}

// wantStats fails unless Stats at now describes what the test checks: the queue and the
// subscriptions' states.
func wantStats(t *testing.T, s store.Store, now time.Time, want string) {
	t.Helper()
	st, err := s.Stats(context.Background(), now)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	oldest := "-"
	if !st.OldestDue.IsZero() {
		oldest = rel(&st.OldestDue)
	}
	got := fmt.Sprintf("pending=%d oldest=%s active=%d error=%d inactive=%d", st.Pending, oldest, st.Active, st.InErrorState, st.Inactive)
	if got != want {
		t.Fatalf("Stats(%s)\n got: %s\nwant: %s", rel(&now), got, want)
	}
}

// setActive deactivates the subscription at when, or reactivates it (with a clean slate).
func setActive(t *testing.T, s store.Store, id string, active bool, when time.Time) {
	t.Helper()
	_, err := s.UpdateSubscription(context.Background(), id, func(sub *store.Subscription) error {
		if active {
			store.Reactivate(sub)
		} else {
			sub.Active, sub.DeactivatedAt = false, &when
		}
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSubscription(%s, active=%t): %v", id, active, err)
	}
}

// wantResults fails unless IngestEvents' results are want, each written "id type deliveries
// [duplicate] [targets, sorted]".
func wantResults(t *testing.T, res []store.IngestResult, want ...string) {
	t.Helper()
	got := make([]string, len(res))
	for i, r := range res {
		dup := ""
		if r.Duplicate {
			dup = " duplicate"
		}
		got[i] = fmt.Sprintf("%s %s %d%s %v", r.ID, r.Type, r.Deliveries, dup, slices.Sorted(slices.Values(r.Targets)))
	}
	wantList(t, "IngestEvents results", got, want...)
}

func testIngestFanOut(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "x-only", "x")
	subscriber(t, s, "all", store.AllEvents)
	subscriber(t, s, "y-only", "y")
	subscriber(t, s, "x-and-y", "x", "y")
	off := sample("inactive", base)
	off.Events, off.Active, off.DeactivatedAt = []string{store.AllEvents}, false, ptr(base)
	mustCreate(t, s, off)

	var made []string
	res, err := s.IngestEvents(ctx, []*store.Event{
		event("e1", "x", at(time.Second)),
		event("e2", "y", at(2*time.Second)),
		event("e3", "z", at(3*time.Second)),
	}, store.IngestOptions{NewID: func() string { id := newID(); made = append(made, id); return id }})
	if err != nil {
		t.Fatal(err)
	}
	wantResults(t, res, "e1 x 3 [all x-and-y x-only]", "e2 y 3 [all x-and-y y-only]", "e3 z 1 [all]")

	var ids []string
	for i, targets := range [][]string{{"x-only", "all", "x-and-y"}, {"all", "y-only", "x-and-y"}, {"all"}} {
		eventID := fmt.Sprintf("e%d", i+1)
		ev, ds, err := s.GetEvent(ctx, eventID)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Deliveries != len(targets) {
			t.Errorf("%s: Deliveries %d, want %d", eventID, ev.Deliveries, len(targets))
		}
		var subs []string
		for _, d := range ds {
			subs = append(subs, d.SubscriptionID)
			ids = append(ids, d.ID)
			// A new delivery is due at once: at its event's ReceivedAt.
			if got, want := state(d), fmt.Sprintf("pending attempts=0 step=0 next=%s finished=- code=0 error=\"\"", rel(&ev.ReceivedAt)); got != want {
				t.Errorf("%s: got %s, want %s", name(d), got, want)
			}
			if d.EventType != ev.Type {
				t.Errorf("%s: EventType %q, want %q", name(d), d.EventType, ev.Type)
			}
		}
		wantSet(t, eventID+" fanned out to", subs, targets...)
	}
	wantSet(t, "delivery ids", ids, made...)
	if ds, err := s.ListDeliveries(ctx, store.DeliveryFilter{SubscriptionID: "inactive"}, store.ListOptions{}); err != nil || len(ds) != 0 {
		t.Fatalf("the inactive subscription got %d deliveries (%v)", len(ds), err)
	}
}

func testIngestDuplicates(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "y")
	first := event("e1", "x", at(0))
	mustIngest(t, s, first)
	// A subscription created since must not get a delivery of the duplicate.
	subscriber(t, s, "late", store.AllEvents)

	again := event("e1", "y", at(time.Minute))
	again.Payload = []byte(`{"id":"e1","changed":true}`)
	res := mustIngest(t, s, again, event("e2", "y", at(time.Minute)), event("e2", "x", at(2*time.Minute)))
	wantResults(t, res, "e1 x 1 duplicate []", "e2 y 2 [b late]", "e2 y 2 duplicate []")

	ev, ds, err := s.GetEvent(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "x" || !bytes.Equal(ev.Payload, first.Payload) || !ev.ReceivedAt.Equal(first.ReceivedAt) || ev.Deliveries != 1 || len(ds) != 1 {
		t.Fatalf("the duplicate changed the event: %+v, %d deliveries", ev, len(ds))
	}
	ev, ds, err = s.GetEvent(ctx, "e2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "y" || !ev.ReceivedAt.Equal(at(time.Minute)) || len(ds) != 2 {
		t.Fatalf("e2: %+v, %d deliveries, want the first of the call's two", ev, len(ds))
	}
	for _, id := range []string{"a", "b", "late"} {
		ds, err := s.ListDeliveries(ctx, store.DeliveryFilter{SubscriptionID: id}, store.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range ds {
			names = append(names, name(d))
		}
		wantSet(t, "deliveries to "+id, names, map[string][]string{"a": {"e1/a"}, "b": {"e2/b"}, "late": {"e2/late"}}[id]...)
	}
}

func testGetEvent(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	// Bytes a JSON column would normalize: spacing, key order, a duplicate key, escapes.
	payload := []byte("{ \"z\":1,\"id\" : \"e1\",\"z\":2, \"s\":\"caf\\u00e9 \xc3\xa9\",\n\t\"n\":1.50 }\n")
	ev := &store.Event{ID: "e1", Type: "x", Payload: bytes.Clone(payload),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ReceivedAt: at(time.Second)}
	mustIngest(t, s, ev)

	got, ds, err := s.GetEvent(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payload, payload) {
		t.Errorf("payload\n got: %q\nwant: %q", got.Payload, payload)
	}
	if got.ID != "e1" || got.Type != "x" || got.TraceParent != ev.TraceParent || got.Deliveries != 2 ||
		!got.ReceivedAt.Equal(ev.ReceivedAt) || got.ReceivedAt.Location() != time.UTC {
		t.Errorf("event: %+v", got)
	}
	var names []string
	for _, d := range ds {
		names = append(names, name(d))
	}
	wantSet(t, "deliveries", names, "e1/a", "e1/b")
}

func testDeliveryLookupsMissing(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, _, err := s.GetEvent(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetEvent: got %v, want ErrNotFound", err)
	}
	if _, _, err := s.GetDelivery(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDelivery: got %v, want ErrNotFound", err)
	}
	if _, err := s.RetryDelivery(ctx, "nope", base); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RetryDelivery: got %v, want ErrNotFound", err)
	}
}

func testClaimDue(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	ev := event("now", "x", at(0))
	ev.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	// Ingested latest first: claims go by due time, not by insertion.
	mustIngest(t, s, event("later", "x", at(2*time.Minute)), event("soon", "x", at(time.Minute)), ev)

	r := claimOf(t, s, at(90*time.Second), at(time.Hour), 1, "a")
	if len(r.names) != 1 {
		t.Fatalf("claimed %q with Limit 1", r.names)
	}
	if r.names[0] != "now/a" {
		t.Fatalf("claimed %s first, want the longest due, now/a", r.names[0])
	}
	c := r.claim("now/a")
	if c.Delivery.ID != deliveryOf(t, s, "now", "a") || c.Delivery.Status != store.Pending || c.Delivery.EventType != "x" ||
		c.Delivery.SubscriptionID != "a" {
		t.Errorf("claimed delivery: %+v", c.Delivery)
	}
	if c.Event == nil || c.Event.ID != "now" || c.Event.Type != "x" || !bytes.Equal(c.Event.Payload, ev.Payload) ||
		c.Event.TraceParent != ev.TraceParent || !c.Event.ReceivedAt.Equal(at(0)) {
		t.Errorf("claimed event: %+v", c.Event)
	}

	wantList(t, "then, due by +1m30s", claimOf(t, s, at(90*time.Second), at(time.Hour), 10, "a").names, "soon/a")
	wantList(t, "at +3m, the others leased", claimOf(t, s, at(3*time.Minute), at(time.Hour), 10, "a").names, "later/a")
	wantList(t, "at +59m, all leased", claimOf(t, s, at(59*time.Minute), at(time.Hour), 10, "a").names)
	// A claim that takes all it may returns them longest due first too.
	wantList(t, "b's three, Limit 3", claimOf(t, s, at(3*time.Minute), at(time.Hour), 3, "b").names, "now/b", "soon/b", "later/b")
}

func testClaimLease(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	tokens := map[int64]bool{}
	lease := func(now, until time.Duration) []string {
		t.Helper()
		r := claimOf(t, s, at(now), at(until), 10, "a")
		for _, c := range r.claims {
			if tokens[c.Token] {
				t.Fatalf("a claim at %s reused token %d", rel(ptr(at(now))), c.Token)
			}
			tokens[c.Token] = true
		}
		return r.names
	}
	wantList(t, "first claim", lease(0, time.Minute), "e1/a")
	wantList(t, "before the lease ends", lease(59*time.Second, 2*time.Minute))
	wantList(t, "when the lease ends", lease(time.Minute, 3*time.Minute), "e1/a")
	wantList(t, "before the new lease ends", lease(2*time.Minute, 4*time.Minute))
	// The delivery is still pending, unchanged by its leases.
	wantState(t, s, deliveryOf(t, s, "e1", "a"), `pending attempts=0 step=0 next=+0s finished=- code=0 error=""`)
}

// testClaimNamedLimitInactive claims only the subscriptions named, up to each one's limit, and
// never an inactive subscription's deliveries.
func testClaimNamedLimitInactive(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	subscriber(t, s, "off", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(time.Second)), event("e3", "x", at(2*time.Second)))
	setActive(t, s, "off", false, at(time.Minute))
	now, until := at(time.Minute), at(time.Hour)
	both := store.ClaimOptions{Now: now, LeaseUntil: until, Subscriptions: []store.SubscriptionClaim{{ID: "a", Limit: 0}, {ID: "b", Limit: 10}}}
	wantList(t, "a with Limit 0, b with 10", claim(t, s, both).names, "e1/b", "e2/b", "e3/b")
	wantList(t, "a, Limit 2", claimOf(t, s, now, until, 2, "a").names, "e1/a", "e2/a")
	wantList(t, "a, the rest", claimOf(t, s, now, until, 10, "a").names, "e3/a")
	wantList(t, "an unknown subscription", claimOf(t, s, now, until, 10, "nobody").names)
	// The inactive subscription's deliveries stay pending, unclaimed.
	wantList(t, "the inactive subscription", claimOf(t, s, now, until, 10, "off").names)
	wantState(t, s, deliveryOf(t, s, "e1", "off"), `pending attempts=0 step=0 next=+0s finished=- code=0 error=""`)
}

// testClaimConcurrent claims from several goroutines at once: no delivery may be leased twice.
// SQLite's single writer serializes the claims; this is for a shared backend.
func testClaimConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	var events []*store.Event
	for i := range 15 {
		events = append(events, event(fmt.Sprintf("e%02d", i), "x", at(time.Duration(i)*time.Second)))
	}
	mustIngest(t, s, events...)
	opts := store.ClaimOptions{Now: at(time.Minute), LeaseUntil: at(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "a", Limit: 2}, {ID: "b", Limit: 2}}}
	var (
		mu   sync.Mutex
		got  = map[string]int{}
		wg   sync.WaitGroup
		errs = make(chan error, 8)
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 { // enough for one worker to claim all; a broken lease must not loop for ever
				res, err := s.ClaimDeliveries(ctx, opts)
				if err != nil {
					errs <- err
					return
				}
				if len(res.Claims) == 0 {
					return
				}
				mu.Lock()
				for _, c := range res.Claims {
					got[c.Delivery.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(got) != 30 {
		t.Fatalf("claimed %d distinct deliveries of 30", len(got))
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("%s claimed %d times", id, n)
		}
	}
}

func testReleaseDeliveries(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	r := claimAt(t, s, at(time.Second))
	wantSet(t, "first claim", r.names, "e1/a", "e2/a")
	if err := s.ReleaseDeliveries(context.Background(), []store.Lease{r.lease("e2/a")}); err != nil {
		t.Fatal(err)
	}
	wantList(t, "after releasing e2/a", claimAt(t, s, at(2*time.Second)).names, "e2/a")
	wantState(t, s, deliveryOf(t, s, "e2", "a"), `pending attempts=0 step=0 next=+0s finished=- code=0 error=""`)
}

// testRecoverLeasesReleasesAll holds a backend that one process owns (SQLite) to releasing every
// lease; a shared backend lets them expire instead, and does not run this test.
func testRecoverLeasesReleasesAll(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	wantSet(t, "first claim", claimAt(t, s, at(time.Second)).names, "e1/a", "e2/a")
	if err := s.RecoverLeases(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantSet(t, "after RecoverLeases", claimAt(t, s, at(2*time.Second)).names, "e1/a", "e2/a")
}

func testCompleteSuccess(t *testing.T, s store.Store) {
	// The subscription was failing: a success clears its error state.
	sub := sample("a", base)
	sub.Events = []string{"x"}
	sub.InErrorState, sub.ErrorStateReason, sub.DetectedErrorStateAt, sub.ConsecutiveFailures = true, "HTTP 500 from target", ptr(base), 4
	mustCreate(t, s, sub)
	mustIngest(t, s, event("e1", "x", at(0)))
	r := claimAt(t, s, at(time.Second))
	wantList(t, "claim", r.names, "e1/a")

	id := deliveryOf(t, s, "e1", "a")
	sent := []store.Attempt{
		{At: at(2 * time.Second), Duration: 250 * time.Millisecond, StatusCode: 503, Error: "HTTP 503",
			ResponseBody: []byte("busy"), TraceID: "0af7651916cd43dd8448eb211c80319c"},
		{At: at(3 * time.Second), Duration: 5 * time.Second, Error: "timeout", TraceID: "1af7651916cd43dd8448eb211c80319c"},
		{At: at(9 * time.Second), Duration: 120 * time.Millisecond, StatusCode: 204,
			ResponseBody: []byte{0, 0xff, '\n'}, TraceID: "2af7651916cd43dd8448eb211c80319c"},
	}
	complete(t, s, at(10*time.Second), &store.Outcome{DeliveryID: id, SubscriptionID: "a", Token: r.claim("e1/a").Token,
		Attempts: sent, Succeeded: true})

	wantState(t, s, id, `succeeded attempts=3 step=0 next=- finished=+10s code=204 error=""`)
	_, got := mustDelivery(t, s, id)
	if len(got) != len(sent) {
		t.Fatalf("%d attempts stored, want %d", len(got), len(sent))
	}
	for i, a := range got {
		w := sent[i]
		if !a.At.Equal(w.At) || a.Duration != w.Duration || a.StatusCode != w.StatusCode || a.Error != w.Error ||
			!bytes.Equal(a.ResponseBody, w.ResponseBody) || a.TraceID != w.TraceID {
			t.Errorf("attempt %d\n got: %+v\nwant: %+v", i, a, w)
		}
	}
	wantHealth(t, s, "a", `active=true deactivated=- error=false reason="" detected=- failures=0`)
	wantList(t, "claim after success", claimAt(t, s, at(time.Hour)).names)
	wantDue(t, s, at(time.Hour), "")
}

func testCompleteRetryThenFail(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	id := deliveryOf(t, s, "e1", "a")
	r := claimAt(t, s, at(0))
	wantList(t, "claim", r.names, "e1/a")

	complete(t, s, at(10*time.Second), failure(r.claim("e1/a"), at(time.Second), ptr(at(5*time.Minute)), 500))
	wantState(t, s, id, `pending attempts=1 step=1 next=+5m0s finished=- code=500 error=""`)
	wantDue(t, s, at(10*time.Second), "a:+5m0s")
	wantList(t, "before the retry is due", claimAt(t, s, at(5*time.Minute-time.Millisecond)).names)
	// Completing ended the lease, which ran to +1h.
	r = claimAt(t, s, at(5*time.Minute))
	wantList(t, "when the retry is due", r.names, "e1/a")

	complete(t, s, at(6*time.Minute), failure(r.claim("e1/a"), at(5*time.Minute), ptr(at(time.Hour)), 502, 503))
	wantState(t, s, id, `pending attempts=3 step=2 next=+1h0m0s finished=- code=503 error=""`)
	r = claimAt(t, s, at(time.Hour))
	wantList(t, "at the second retry", r.names, "e1/a")

	complete(t, s, at(time.Hour+time.Minute), failure(r.claim("e1/a"), at(time.Hour), nil, 0))
	wantState(t, s, id, `failed attempts=4 step=2 next=- finished=+1h1m0s code=0 error="connection refused"`)
	wantDue(t, s, at(2*time.Hour), "")
	wantList(t, "after giving up", claimAt(t, s, at(48*time.Hour)).names)
	_, as := mustDelivery(t, s, id)
	var codes []string
	for _, a := range as {
		codes = append(codes, fmt.Sprint(a.StatusCode))
	}
	wantList(t, "attempts, oldest first", codes, "500", "502", "503", "0")
}

func testCompleteErrorState(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	r := claimAt(t, s, at(0))
	wantSet(t, "claim", r.names, "e1/a", "e2/a")

	retry := ptr(at(time.Minute))
	complete(t, s, at(time.Minute), failure(r.claim("e1/a"), at(time.Second), retry, 500, 500))
	wantHealth(t, s, "a", `active=true deactivated=- error=false reason="" detected=- failures=2`)
	complete(t, s, at(2*time.Minute), failure(r.claim("e2/a"), at(time.Minute), retry, 502))
	wantHealth(t, s, "a", `active=true deactivated=- error=true reason="HTTP 502 from target" detected=+2m0s failures=3`)

	// Still failing, but not yet DisableAfter after the error state began.
	r = claimAt(t, s, at(time.Hour))
	wantSet(t, "claim", r.names, "e1/a", "e2/a")
	complete(t, s, at(24*time.Hour), failure(r.claim("e1/a"), at(time.Hour), retry, 504))
	wantHealth(t, s, "a", `active=true deactivated=- error=true reason="HTTP 504 from target" detected=+2m0s failures=4`)
	// DisableAfter elapsed: deactivated.
	complete(t, s, at(24*time.Hour+2*time.Minute), failure(r.claim("e2/a"), at(24*time.Hour), retry, 500))
	wantHealth(t, s, "a", `active=false deactivated=+24h2m0s error=true reason="HTTP 500 from target" detected=+2m0s failures=5`)
	wantList(t, "claim from a deactivated subscription", claimAt(t, s, at(48*time.Hour)).names)
}

// testCompleteErrorStateInOneCall completes three failures of one subscription in one call:
// each outcome sees the state the one before left.
func testCompleteErrorStateInOneCall(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)), event("e3", "x", at(0)))
	r := claimAt(t, s, at(0))
	var outcomes []*store.Outcome
	for _, e := range []string{"e1", "e2", "e3"} {
		outcomes = append(outcomes, failure(r.claim(e+"/a"), at(time.Second), ptr(at(time.Hour)), 500))
	}
	outcomes = append(outcomes, success(r.claim("e1/b"), at(time.Second)))
	complete(t, s, at(time.Minute), outcomes...)
	wantHealth(t, s, "a", `active=true deactivated=- error=true reason="HTTP 500 from target" detected=+1m0s failures=3`)
	wantHealth(t, s, "b", `active=true deactivated=- error=false reason="" detected=- failures=0`)
}

func testCompleteGone(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	id := deliveryOf(t, s, "e1", "a")
	r := claimAt(t, s, at(0))
	o := failure(r.claim("e1/a"), at(time.Second), nil, 410)
	o.Gone = true
	complete(t, s, at(time.Minute), o)
	wantState(t, s, id, `failed attempts=1 step=0 next=- finished=+1m0s code=410 error=""`)
	sub, err := s.GetSubscription(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if sub.Active || sub.DeactivatedAt == nil || !sub.DeactivatedAt.Equal(at(time.Minute)) {
		t.Fatalf("after a 410: %s, want deactivated at +1m0s", health(sub))
	}
}

func testCompleteDeletedSubscription(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	r := claimAt(t, s, at(0))
	if err := s.DeleteSubscription(ctx, "a", at(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Attempts were in flight when the subscription went away.
	o := failure(r.claim("e1/a"), at(time.Second), nil, 500, 500, 500)
	o.Gone = true
	complete(t, s, at(time.Minute), o, success(r.claim("e1/b"), at(time.Second)))
	if _, err := s.GetSubscription(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the completion brought the subscription back: %v", err)
	}
	wantState(t, s, deliveryOf(t, s, "e1", "a"), `failed attempts=3 step=0 next=- finished=+1m0s code=500 error="subscription deleted"`)
	wantLogAgrees(t, s, deliveryOf(t, s, "e1", "a"))
	wantState(t, s, deliveryOf(t, s, "e1", "b"), `succeeded attempts=1 step=0 next=- finished=+1m0s code=200 error=""`)
}

// testCompleteRetryAfterDelete completes, with a retry, a delivery whose subscription was
// deleted while it was in flight: a delivery whose subscription went away is failed, and must
// not be left pending (DueSubscriptions would report it due for ever, and no claim would take it).
func testCompleteRetryAfterDelete(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	id := deliveryOf(t, s, "e1", "a")
	r := claimAt(t, s, at(0))
	if err := s.DeleteSubscription(context.Background(), "a", at(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	complete(t, s, at(time.Minute), failure(r.claim("e1/a"), at(time.Second), ptr(at(5*time.Minute)), 503))
	wantState(t, s, id, `failed attempts=1 step=0 next=- finished=+1m0s code=503 error="subscription deleted"`)
	wantDue(t, s, at(time.Hour), "")
}

// testCompleteSubscriptionDeletedOutcome completes a round that did not run because the engine
// found the subscription gone: the delivery fails, with no attempt.
func testCompleteSubscriptionDeletedOutcome(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	id := deliveryOf(t, s, "e1", "a")
	r := claimAt(t, s, at(0))
	if err := s.DeleteSubscription(context.Background(), "a", at(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	c := r.claim("e1/a")
	complete(t, s, at(time.Minute), &store.Outcome{DeliveryID: id, SubscriptionID: "a", Token: c.Token, SubscriptionDeleted: true})
	wantState(t, s, id, `failed attempts=0 step=0 next=- finished=+1m0s code=0 error="subscription deleted"`)
	wantDue(t, s, at(time.Hour), "")
}

// testDueSubscriptions reports, per subscription, when its earliest delivery that is not in
// flight at now is due.
func testDueSubscriptions(t *testing.T, s store.Store) {
	wantDue(t, s, at(0), "")
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "y")
	mustIngest(t, s, event("late", "x", at(5*time.Minute)), event("early", "x", at(time.Minute)), event("y1", "y", at(3*time.Minute)))
	wantDue(t, s, at(0), "a:+1m0s b:+3m0s")
	r := claimAt(t, s, at(time.Minute))
	wantList(t, "claim at +1m", r.names, "early/a")
	// early/a is in flight until +1h1m.
	wantDue(t, s, at(time.Minute), "a:+5m0s b:+3m0s")
	wantDue(t, s, at(time.Hour+time.Minute), "a:+1m0s b:+3m0s")
	complete(t, s, at(2*time.Minute), success(r.claim("early/a"), at(time.Minute)))
	wantDue(t, s, at(2*time.Minute), "a:+5m0s b:+3m0s")
}

func testListDeliveries(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	for i := 1; i <= 5; i++ {
		mustIngest(t, s, event(fmt.Sprintf("e%d", i), "x", at(time.Duration(i)*time.Second)))
	}
	r := claimAt(t, s, at(time.Minute))
	complete(t, s, at(2*time.Minute),
		failure(r.claim("e2/a"), at(time.Minute), nil, 500),
		failure(r.claim("e4/a"), at(time.Minute), nil, 500),
		success(r.claim("e5/a"), at(time.Minute)))

	list := func(status store.DeliveryStatus, opts store.ListOptions) []string {
		t.Helper()
		ds, err := s.ListDeliveries(ctx, store.DeliveryFilter{SubscriptionID: "a", Status: status}, opts)
		if err != nil {
			t.Fatalf("ListDeliveries(%q, %+v): %v", status, opts, err)
		}
		names := make([]string, len(ds))
		for i, d := range ds {
			names[i] = name(d)
			if status != "" && d.Status != status {
				t.Errorf("%s is %s, listed as %s", names[i], d.Status, status)
			}
		}
		return names
	}
	wantList(t, "all", list("", store.ListOptions{}), "e5/a", "e4/a", "e3/a", "e2/a", "e1/a")
	wantList(t, "failed", list(store.Failed, store.ListOptions{}), "e4/a", "e2/a")
	wantList(t, "pending", list(store.Pending, store.ListOptions{}), "e3/a", "e1/a")

	var pages [][]string
	after := ""
	for range 10 {
		page := list("", store.ListOptions{Limit: 2, After: after})
		if len(page) == 0 {
			break
		}
		pages = append(pages, page)
		after = deliveryOf(t, s, strings.TrimSuffix(page[len(page)-1], "/a"), "a")
	}
	if got := fmt.Sprint(pages); got != "[[e5/a e4/a] [e3/a e2/a] [e1/a]]" {
		t.Fatalf("pages of 2: %s", got)
	}
	if _, err := s.ListDeliveries(ctx, store.DeliveryFilter{SubscriptionID: "a"}, store.ListOptions{After: "missing"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after a missing id: got %v, want ErrNotFound", err)
	}
}

func testRetryDelivery(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	failed, done := deliveryOf(t, s, "e1", "a"), deliveryOf(t, s, "e2", "a")
	r := claimAt(t, s, at(0))
	complete(t, s, at(time.Minute), failure(r.claim("e1/a"), at(time.Second), nil, 500), success(r.claim("e2/a"), at(time.Second)))

	d, err := s.RetryDelivery(ctx, failed, at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != failed || d.Status != store.Pending || rel(d.NextAttemptAt) != "+1h0m0s" || d.FinishedAt != nil {
		t.Fatalf("RetryDelivery returned %s", state(d))
	}
	wantDue(t, s, at(time.Hour), "a:+1h0m0s")
	wantList(t, "before now", claimAt(t, s, at(time.Hour-time.Millisecond)).names)
	wantList(t, "at now", claimAt(t, s, at(time.Hour)).names, "e1/a")

	// Whatever its status: a succeeded delivery can be sent again too.
	if _, err := s.RetryDelivery(ctx, done, at(90*time.Minute)); err != nil {
		t.Fatal(err)
	}
	d, _ = mustDelivery(t, s, done)
	if d.Status != store.Pending || rel(d.NextAttemptAt) != "+1h30m0s" || d.FinishedAt != nil {
		t.Fatalf("retried success: %s", state(d))
	}
	wantList(t, "the retried success", claimAt(t, s, at(90*time.Minute)).names, "e2/a")
}

func testPrune(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s,
		event("done", "x", at(0)),      // succeeded before the cutoff: pruned
		event("gave-up", "x", at(0)),   // failed before the cutoff: pruned
		event("late-fail", "x", at(0)), // failed after the cutoff: kept
		event("waiting", "x", at(0)),   // pending: kept
		event("unheard", "nobody", at(0)),
		event("fresh", "nobody", at(2*time.Hour)))
	done := deliveryOf(t, s, "done", "a")
	r := claimAt(t, s, at(0))
	complete(t, s, at(time.Minute), success(r.claim("done/a"), at(time.Second)))
	complete(t, s, at(30*time.Minute), failure(r.claim("gave-up/a"), at(time.Second), nil, 500))
	complete(t, s, at(2*time.Hour), failure(r.claim("late-fail/a"), at(time.Second), nil, 500))
	complete(t, s, at(2*time.Hour), failure(r.claim("waiting/a"), at(time.Second), ptr(at(3*time.Hour)), 500))

	n, more, err := s.Prune(ctx, at(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || more {
		t.Errorf("Prune deleted %d deliveries, more=%t; want 2, more=false", n, more)
	}
	if _, _, err := s.GetDelivery(ctx, done); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pruned delivery: got %v, want ErrNotFound", err)
	}
	for eventID, kept := range map[string]bool{"done": false, "gave-up": false, "late-fail": true, "waiting": true,
		"unheard": false, "fresh": true} {
		_, ds, err := s.GetEvent(ctx, eventID)
		switch {
		case kept && err != nil:
			t.Errorf("event %s: %v, want it kept", eventID, err)
		case kept && len(ds) != 1 && eventID != "fresh":
			t.Errorf("event %s kept %d deliveries, want 1", eventID, len(ds))
		case !kept && !errors.Is(err, store.ErrNotFound):
			t.Errorf("event %s: got %v, want it pruned", eventID, err)
		}
	}
	wantState(t, s, deliveryOf(t, s, "waiting", "a"), `pending attempts=1 step=1 next=+3h0m0s finished=- code=500 error=""`)

	// The pruned delivery's attempts went with it: a new delivery given its id has none.
	if _, err := s.IngestEvents(ctx, []*store.Event{event("again", "x", at(3*time.Hour))}, store.IngestOptions{NewID: func() string { return done }}); err != nil {
		t.Fatal(err)
	}
	if _, as := mustDelivery(t, s, done); len(as) != 0 {
		t.Errorf("a pruned delivery's %d attempts were kept", len(as))
	}
	if n, more, err := s.Prune(ctx, at(time.Hour), 100); err != nil || n != 0 || more {
		t.Errorf("second Prune: %d, more=%t, %v; want 0, false", n, more, err)
	}
}

func testDeleteFailsPending(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(time.Second)))
	r := claimAt(t, s, at(0))
	complete(t, s, at(time.Minute), success(r.claim("e1/a"), at(time.Second)))
	pending := deliveryOf(t, s, "e2", "a")
	if err := s.DeleteSubscription(context.Background(), "a", at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, pending, `failed attempts=0 step=0 next=- finished=+2m0s code=0 error="subscription deleted"`)
	wantState(t, s, deliveryOf(t, s, "e1", "a"), `succeeded attempts=1 step=0 next=- finished=+1m0s code=200 error=""`)
	wantState(t, s, deliveryOf(t, s, "e2", "b"), `pending attempts=0 step=0 next=+1s finished=- code=0 error=""`)
	// e1/b is still leased.
	wantList(t, "claim", claimAt(t, s, at(30*time.Minute)).names, "e2/b")
	wantDue(t, s, at(2*time.Hour), "b:+0s")
}

// testStats counts the queue and the subscriptions' states for monitoring.
func testStats(t *testing.T, s store.Store) {
	ctx := context.Background()
	st, err := s.Stats(ctx, at(0))
	if err != nil || st != (store.Stats{}) {
		t.Fatalf("empty store: %+v, %v", st, err)
	}
	subscriber(t, s, "a", store.AllEvents)
	subscriber(t, s, "b", store.AllEvents)
	mustIngest(t, s, event("e1", "t", at(time.Minute)), event("e2", "t", at(2*time.Minute)))
	if _, err := s.UpdateSubscription(ctx, "b", func(sub *store.Subscription) error {
		sub.InErrorState = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, err = s.Stats(ctx, at(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := store.Stats{Pending: 4, OldestDue: at(time.Minute), Active: 1, InErrorState: 1}
	if st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	if st, _ = s.Stats(ctx, at(0)); !st.OldestDue.IsZero() || st.Pending != 4 {
		t.Fatalf("nothing due yet: %+v", st)
	}
	// An inactive subscription's deliveries wait for its reactivation, not for the queue; a
	// delivery in flight is not overdue.
	if _, err := s.UpdateSubscription(ctx, "b", func(sub *store.Subscription) error {
		sub.Active = false
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantList(t, "claim", claimAt(t, s, at(2*time.Minute)).names, "e1/a", "e2/a")
	wantStats(t, s, at(3*time.Minute), "pending=2 oldest=- active=1 error=0 inactive=1")
}
