package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

// Operating deliveries: ListDeliveries across subscriptions with filters, RecoverDeliveries
// and ReplayEvent.

// opsCases are the conformance cases of this file.
var opsCases = []testCase{
	{"ListDeliveriesFiltersAndPages", testListDeliveriesFiltered},
	{"RecoverDeliveriesWindow", testRecoverWindow},
	{"RecoverDeliveriesInactiveStayPaused", testRecoverInactive},
	{"RecoverDeliveriesFIFOKeepsIngestOrder", testRecoverFIFO},
	{"ReplayEventIsANewDelivery", testReplay},
	{"ReplayEventToInactiveIsPaused", testReplayInactive},
}

// listNames lists with filter and opts and names the deliveries, failing the test on an error.
func listNames(t *testing.T, s store.Store, filter store.DeliveryFilter, opts store.ListOptions) []string {
	t.Helper()
	ds, err := s.ListDeliveries(context.Background(), filter, opts)
	if err != nil {
		t.Fatalf("ListDeliveries(%+v, %+v): %v", filter, opts, err)
	}
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = name(d)
		switch {
		case filter.SubscriptionID != "" && d.SubscriptionID != filter.SubscriptionID,
			filter.Status != "" && d.Status != filter.Status,
			filter.EventType != "" && d.EventType != filter.EventType,
			!filter.Since.IsZero() && d.CreatedAt.Before(filter.Since),
			!filter.Until.IsZero() && !d.CreatedAt.Before(filter.Until):
			t.Errorf("%s (%s, %s, created %s) does not match %+v", names[i], d.Status, d.EventType, rel(&d.CreatedAt), filter)
		}
	}
	return names
}

func testListDeliveriesFiltered(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x", "y")
	subscriber(t, s, "b", "x")
	mustIngest(t, s, event("e1", "x", at(time.Second)))
	mustIngest(t, s, event("e2", "y", at(2*time.Second)))
	mustIngest(t, s, event("e3", "x", at(3*time.Second)))
	mustIngest(t, s, event("e4", "x", at(4*time.Second)))
	r := claimAt(t, s, at(time.Minute))
	complete(t, s, at(2*time.Minute),
		failure(r.claim("e1/b"), at(time.Minute), nil, 500),
		failure(r.claim("e3/a"), at(time.Minute), nil, 500),
		success(r.claim("e4/a"), at(time.Minute)))
	s.ReleaseDeliveries(ctx, []store.Lease{r.lease("e1/a"), r.lease("e2/a"), r.lease("e3/b"), r.lease("e4/b")})

	all := store.DeliveryFilter{}
	// Newest first; deliveries made together (one event's fan-out) by id, descending.
	wantList(t, "all", listNames(t, s, all, store.ListOptions{}), "e4/b", "e4/a", "e3/b", "e3/a", "e2/a", "e1/b", "e1/a")
	wantList(t, "failed", listNames(t, s, store.DeliveryFilter{Status: store.Failed}, store.ListOptions{}), "e3/a", "e1/b")
	wantList(t, "succeeded", listNames(t, s, store.DeliveryFilter{Status: store.Succeeded}, store.ListOptions{}), "e4/a")
	wantList(t, "type y", listNames(t, s, store.DeliveryFilter{EventType: "y"}, store.ListOptions{}), "e2/a")
	wantList(t, "type z", listNames(t, s, store.DeliveryFilter{EventType: "z"}, store.ListOptions{}))
	wantList(t, "of b", listNames(t, s, store.DeliveryFilter{SubscriptionID: "b"}, store.ListOptions{}), "e4/b", "e3/b", "e1/b")
	wantList(t, "of a deleted or unknown subscription", listNames(t, s, store.DeliveryFilter{SubscriptionID: "nope"}, store.ListOptions{}))
	// Since is inclusive, until exclusive.
	window := store.DeliveryFilter{Since: at(2 * time.Second), Until: at(4 * time.Second)}
	wantList(t, "[+2s, +4s)", listNames(t, s, window, store.ListOptions{}), "e3/b", "e3/a", "e2/a")
	wantList(t, "since +3s", listNames(t, s, store.DeliveryFilter{Since: at(3 * time.Second)}, store.ListOptions{}), "e4/b", "e4/a", "e3/b", "e3/a")
	wantList(t, "until +2s", listNames(t, s, store.DeliveryFilter{Until: at(2 * time.Second)}, store.ListOptions{}), "e1/b", "e1/a")
	wantList(t, "of a, type x, pending, [+1s, +4s)", listNames(t, s, store.DeliveryFilter{
		SubscriptionID: "a", EventType: "x", Status: store.Pending, Since: at(time.Second), Until: at(4 * time.Second),
	}, store.ListOptions{}), "e1/a")

	pages := func(filter store.DeliveryFilter, limit int) string {
		t.Helper()
		var out [][]string
		after := ""
		for range 10 {
			page := listNames(t, s, filter, store.ListOptions{Limit: limit, After: after})
			if len(page) == 0 {
				break
			}
			out = append(out, page)
			last := page[len(page)-1]
			after = deliveryOf(t, s, last[:2], last[3:])
		}
		return fmt.Sprint(out)
	}
	if got := pages(all, 3); got != "[[e4/b e4/a e3/b] [e3/a e2/a e1/b] [e1/a]]" {
		t.Fatalf("every delivery, pages of 3: %s", got)
	}
	if got := pages(store.DeliveryFilter{Status: store.Pending, EventType: "x"}, 2); got != "[[e4/b e3/b] [e1/a]]" {
		t.Fatalf("pending of type x, pages of 2: %s", got)
	}
	if _, err := s.ListDeliveries(ctx, all, store.ListOptions{After: "missing"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after a missing id: got %v, want ErrNotFound", err)
	}
}

// recoverN calls RecoverDeliveries and fails unless it recovered want.
func recoverN(t *testing.T, s store.Store, sub string, since, until, now time.Time, want int) {
	t.Helper()
	n, err := s.RecoverDeliveries(context.Background(), sub, since, until, now)
	if err != nil {
		t.Fatalf("RecoverDeliveries(%s, %s, %s): %v", sub, rel(&since), rel(&until), err)
	}
	if n != want {
		t.Fatalf("RecoverDeliveries(%s, %s, %s) recovered %d, want %d", sub, rel(&since), rel(&until), n, want)
	}
}

func testRecoverWindow(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	for i := 1; i <= 6; i++ {
		mustIngest(t, s, event(fmt.Sprintf("e%d", i), "x", at(time.Duration(i)*time.Second)))
	}
	r := claimAt(t, s, at(time.Minute))
	complete(t, s, at(2*time.Minute),
		failure(r.claim("e1/a"), at(time.Minute), nil, 500), // before the window
		failure(r.claim("e2/a"), at(time.Minute), nil, 500), // at since: in it
		failure(r.claim("e3/a"), at(time.Minute), nil, 0),
		failure(r.claim("e4/a"), at(time.Minute), ptr(at(time.Hour)), 500), // pending: untouched
		failure(r.claim("e5/a"), at(time.Minute), nil, 500),                // at until: not in it
		success(r.claim("e6/a"), at(time.Minute)),
		failure(r.claim("e3/b"), at(time.Minute), nil, 500)) // another subscription's
	var rest []store.Lease
	for _, n := range []string{"e1/b", "e2/b", "e4/b", "e5/b", "e6/b"} {
		rest = append(rest, r.lease(n))
	}
	complete(t, s, at(2*time.Minute), func() []*store.Outcome {
		var os []*store.Outcome
		for _, l := range rest {
			os = append(os, &store.Outcome{DeliveryID: l.DeliveryID, SubscriptionID: "b", Token: l.Token,
				Attempts: attempts(at(time.Minute), 200), Succeeded: true})
		}
		return os
	}()...)

	before := map[string]string{}
	for _, n := range []string{"e1/a", "e4/a", "e5/a", "e6/a", "e3/b"} {
		d, _ := mustDelivery(t, s, deliveryOf(t, s, n[:2], n[3:]))
		before[n] = state(d)
	}
	now := at(10 * time.Minute)
	recoverN(t, s, "a", at(2*time.Second), at(5*time.Second), now, 2)
	for _, n := range []string{"e2/a", "e3/a"} {
		d, log := mustDelivery(t, s, deliveryOf(t, s, n[:2], "a"))
		if d.Status != store.Pending || rel(d.NextAttemptAt) != "+10m0s" || d.FinishedAt != nil || d.Attempts != 1 || len(log) != 1 {
			t.Fatalf("recovered %s: %s, %d attempts logged", n, state(d), len(log))
		}
		if !d.UpdatedAt.Equal(now) {
			t.Fatalf("recovered %s updated at %s, want +10m0s", n, rel(&d.UpdatedAt))
		}
	}
	for n, want := range before {
		wantState(t, s, deliveryOf(t, s, n[:2], n[3:]), want)
	}
	// Again while they are pending: they are no longer failed.
	recoverN(t, s, "a", at(2*time.Second), at(5*time.Second), now, 0)
	wantDue(t, s, now, "a:+10m0s")
	wantSet(t, "claim at +10m", claimAt(t, s, now).names, "e2/a", "e3/a")

	// No until: every failed delivery since.
	recoverN(t, s, "a", at(0), time.Time{}, at(11*time.Minute), 2) // e1/a and e5/a
	wantSet(t, "claim at +11m", claimAt(t, s, at(11*time.Minute)).names, "e1/a", "e5/a")
	recoverN(t, s, "b", at(0), time.Time{}, at(11*time.Minute), 1)
	recoverN(t, s, "b", at(0), time.Time{}, at(11*time.Minute), 0)

	if _, err := s.RecoverDeliveries(ctx, "nope", at(0), time.Time{}, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown subscription: got %v, want ErrNotFound", err)
	}
}

func testRecoverInactive(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(time.Second)), event("e2", "x", at(time.Second)))
	r := claimAt(t, s, at(time.Minute))
	complete(t, s, at(2*time.Minute), failure(r.claim("e1/a"), at(time.Minute), nil, 500),
		failure(r.claim("e2/a"), at(time.Minute), nil, 500))
	setActive(t, s, "a", false, at(3*time.Minute))
	recoverN(t, s, "a", at(0), time.Time{}, at(5*time.Minute), 2)
	wantState(t, s, deliveryOf(t, s, "e1", "a"), `pending attempts=1 step=0 next=+5m0s finished=- code=500 error=""`)
	// Paused: neither due nor claimed nor queued, until the subscription is reactivated.
	wantDue(t, s, at(time.Hour), "")
	wantList(t, "claim while inactive", claimAt(t, s, at(time.Hour)).names)
	wantStats(t, s, at(time.Hour), "pending=0 oldest=- active=0 error=0 inactive=1")
	setActive(t, s, "a", true, at(time.Hour))
	wantDue(t, s, at(time.Hour), "a:+5m0s")
	wantSet(t, "claim once active", claimAt(t, s, at(time.Hour)).names, "e1/a", "e2/a")
}

// A fifo subscription's recovered deliveries go out one at a time, in ingest order, before
// deliveries ingested after them.
func testRecoverFIFO(t *testing.T, s store.Store) {
	sub := sample("f", base)
	sub.Events = []string{"x"}
	sub.Policy = store.Policy{Ordering: store.FIFO, MaxInFlight: 1}
	mustCreate(t, s, sub)
	for i := 1; i <= 2; i++ {
		mustIngest(t, s, event(fmt.Sprintf("e%d", i), "x", at(time.Duration(i)*time.Second)))
		r := claimAt(t, s, at(time.Minute))
		complete(t, s, at(time.Minute), failure(r.claim(fmt.Sprintf("e%d/f", i)), at(time.Minute), nil, 500))
	}
	mustIngest(t, s, event("e3", "x", at(2*time.Minute)))
	recoverN(t, s, "f", at(0), time.Time{}, at(3*time.Minute), 2)
	for _, want := range []string{"e1/f", "e2/f", "e3/f"} {
		r := claimAt(t, s, at(3*time.Minute))
		wantList(t, "fifo head", r.names, want)
		complete(t, s, at(3*time.Minute), success(r.claim(want), at(3*time.Minute)))
	}
}

func testReplay(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "y")
	mustIngest(t, s, event("e1", "x", at(time.Second)))
	r := claimAt(t, s, at(time.Minute))
	complete(t, s, at(time.Minute), success(r.claim("e1/a"), at(time.Minute)))

	d, err := s.ReplayEvent(ctx, "e1", "a", "replay-1", at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "replay-1" || name(d) != "e1/a" || d.EventType != "x" || d.Status != store.Pending ||
		rel(d.NextAttemptAt) != "+1h0m0s" || rel(&d.CreatedAt) != "+1h0m0s" || d.Attempts != 0 {
		t.Fatalf("ReplayEvent returned %s %s created %s", d.ID, state(d), rel(&d.CreatedAt))
	}
	// The store does not check the subscription's event types: that is the caller's rule.
	if _, err := s.ReplayEvent(ctx, "e1", "b", "replay-2", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, ds, err := s.GetEvent(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID+":"+string(d.Status))
	}
	first := deliveryOf(t, s, "e1", "a")
	wantList(t, "the event's deliveries", ids, first+":succeeded", "replay-1:pending", "replay-2:pending")
	ds, err = s.ListDeliveries(ctx, store.DeliveryFilter{SubscriptionID: "a"}, store.ListOptions{})
	if err != nil || len(ds) != 2 || ds[0].ID != "replay-1" || ds[1].ID != first {
		t.Fatalf("a's deliveries, newest first: %v (%v)", ds, err)
	}
	wantDue(t, s, at(time.Hour), "a:+1h0m0s b:+1h0m0s")
	r = claimAt(t, s, at(time.Hour))
	wantSet(t, "claim the replays", r.names, "e1/a", "e1/b")
	if c := r.claim("e1/a"); c.Delivery.ID != "replay-1" || c.Event == nil || string(c.Event.Payload) != `{"id":"e1"}` {
		t.Fatalf("claim of the replay: %+v", c.Delivery)
	}

	for _, tc := range []struct{ event, sub, id string }{{"nope", "a", "r3"}, {"e1", "nope", "r4"}} {
		if _, err := s.ReplayEvent(ctx, tc.event, tc.sub, tc.id, at(time.Hour)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ReplayEvent(%s, %s): got %v, want ErrNotFound", tc.event, tc.sub, err)
		}
		if _, _, err := s.GetDelivery(ctx, tc.id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a refused replay stored %s (%v)", tc.id, err)
		}
	}
	if _, err := s.ReplayEvent(ctx, "e1", "a", "replay-1", at(time.Hour)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("a taken id: got %v, want ErrExists", err)
	}
}

func testReplayInactive(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(time.Second)))
	r := claimAt(t, s, at(time.Minute))
	complete(t, s, at(time.Minute), success(r.claim("e1/a"), at(time.Minute)))
	setActive(t, s, "a", false, at(2*time.Minute))
	if _, err := s.ReplayEvent(context.Background(), "e1", "a", "replay-1", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantDue(t, s, at(time.Hour), "")
	wantList(t, "claim while inactive", claimAt(t, s, at(time.Hour)).names)
	setActive(t, s, "a", true, at(2*time.Hour))
	wantList(t, "claim once active", claimAt(t, s, at(2*time.Hour)).names, "e1/a")
}
