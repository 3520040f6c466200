package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

// The claim protocol the delivery engine relies on: claims per subscription, fenced by their
// tokens; leases extended and released; retries asked for while a round is in flight; paused
// backlogs; fifo subscriptions; and what tells the engine's caches to read again.

// fifoSubscriber creates an active fifo subscription to events.
func fifoSubscriber(t *testing.T, s store.Store, id string, events ...string) {
	t.Helper()
	sub := sample(id, base)
	sub.Events, sub.Policy.Ordering = events, store.FIFO
	mustCreate(t, s, sub)
}

// claimFIFO claims, at now and leased for an hour, the head of the fifo subscription id. The
// limit of 10 shows that a fifo claim takes one at most.
func claimFIFO(t *testing.T, s store.Store, now time.Time, id string) round {
	t.Helper()
	return claim(t, s, store.ClaimOptions{Now: now, LeaseUntil: now.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: id, Limit: 10, FIFO: true}}})
}

// testClaimFair claims from two subscriptions with backlogs in one call: each gets up to its
// own limit, however much older the other's backlog is.
func testClaimFair(t *testing.T, s store.Store) {
	subscriber(t, s, "big", "big")
	subscriber(t, s, "small", "small")
	var events []*store.Event
	for i := range 10 {
		events = append(events, event(fmt.Sprintf("b%d", i), "big", at(time.Duration(i)*time.Second)))
	}
	for i := range 3 {
		events = append(events, event(fmt.Sprintf("s%d", i), "small", at(time.Minute+time.Duration(i)*time.Second)))
	}
	mustIngest(t, s, events...)
	opts := store.ClaimOptions{Now: at(time.Hour), LeaseUntil: at(2 * time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "big", Limit: 4}, {ID: "small", Limit: 2}}}
	count := func(r round) string {
		n := map[string]int{}
		for _, c := range r.claims {
			n[c.Delivery.SubscriptionID]++
		}
		return fmt.Sprintf("big=%d small=%d", n["big"], n["small"])
	}
	r := claim(t, s, opts)
	if got := count(r); got != "big=4 small=2" {
		t.Fatalf("first claim: %s (%q), want big=4 small=2", got, r.names)
	}
	wantSet(t, "first claim", r.names, "b0/big", "b1/big", "b2/big", "b3/big", "s0/small", "s1/small")
	r = claim(t, s, opts)
	wantSet(t, "second claim", r.names, "b4/big", "b5/big", "b6/big", "b7/big", "s2/small")
	r = claim(t, s, opts)
	wantSet(t, "third claim", r.names, "b8/big", "b9/big")
}

// testClaimNextDue reads ClaimResult.NextDue: for a subscription whose claim came short, when
// its next delivery that is not in flight is due.
func testClaimNextDue(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	subscriber(t, s, "idle", "nothing")
	subscriber(t, s, "off", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(5*time.Minute)), event("e3", "x", at(10*time.Minute)))
	setActive(t, s, "off", false, at(0))
	until := at(time.Hour)

	r := claimOf(t, s, at(time.Minute), until, 10, "a", "idle", "off")
	wantList(t, "at +1m", r.names, "e1/a")
	// idle has nothing; off's deliveries are paused.
	wantNextDue(t, r, "a:+5m0s")
	r = claimOf(t, s, at(time.Minute), until, 10, "a")
	wantList(t, "again at +1m, e1/a in flight", r.names)
	wantNextDue(t, r, "a:+5m0s")
	r = claimOf(t, s, at(10*time.Minute), until, 1, "a")
	wantList(t, "at +10m, Limit 1", r.names, "e2/a")
	wantNextDue(t, r, "") // not short of its limit
	r = claimOf(t, s, at(10*time.Minute), until, 10, "a")
	wantList(t, "the rest", r.names, "e3/a")
	wantNextDue(t, r, "") // all in flight
}

// testFIFOHeadOnly claims a fifo subscription's oldest pending delivery only, and the next one
// once that is done.
func testFIFOHeadOnly(t *testing.T, s store.Store) {
	fifoSubscriber(t, s, "f", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	mustIngest(t, s, event("e2", "x", at(time.Second)))
	mustIngest(t, s, event("e3", "x", at(2*time.Second)))

	r := claimFIFO(t, s, at(time.Minute), "f")
	wantList(t, "first", r.names, "e1/f")
	again := claimFIFO(t, s, at(time.Minute), "f")
	wantList(t, "while the head is in flight", again.names)
	// The head's completion, not a due time, unblocks the rest.
	wantNextDue(t, again, "")
	complete(t, s, at(2*time.Minute), success(r.claim("e1/f"), at(time.Minute)))
	r = claimFIFO(t, s, at(2*time.Minute), "f")
	wantList(t, "after e1/f succeeded", r.names, "e2/f")
	complete(t, s, at(3*time.Minute), success(r.claim("e2/f"), at(2*time.Minute)))
	// claimAt claims f as fifo, from its policy.
	wantList(t, "after e2/f succeeded", claimAt(t, s, at(3*time.Minute)).names, "e3/f")
}

// testFIFOFailingHeadBlocks holds back a fifo subscription's later deliveries while its head
// waits for a durable retry, until the head succeeds or fails for good.
func testFIFOFailingHeadBlocks(t *testing.T, s store.Store) {
	fifoSubscriber(t, s, "f", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(time.Second)), event("e3", "x", at(2*time.Second)))

	r := claimFIFO(t, s, at(time.Minute), "f")
	wantList(t, "first", r.names, "e1/f")
	complete(t, s, at(time.Minute), failure(r.claim("e1/f"), at(time.Minute), ptr(at(10*time.Minute)), 500))
	r = claimFIFO(t, s, at(2*time.Minute), "f")
	wantList(t, "while the head waits for its retry", r.names)
	wantNextDue(t, r, "f:+10m0s")

	r = claimFIFO(t, s, at(10*time.Minute), "f")
	wantList(t, "when the head's retry is due", r.names, "e1/f")
	complete(t, s, at(11*time.Minute), success(r.claim("e1/f"), at(10*time.Minute)))

	r = claimFIFO(t, s, at(11*time.Minute), "f")
	wantList(t, "after the head succeeded", r.names, "e2/f")
	complete(t, s, at(12*time.Minute), failure(r.claim("e2/f"), at(11*time.Minute), nil, 500))
	wantState(t, s, deliveryOf(t, s, "e2", "f"), `failed attempts=1 step=0 next=- finished=+12m0s code=500 error=""`)

	r = claimFIFO(t, s, at(12*time.Minute), "f")
	wantList(t, "after the next one failed for good", r.names, "e3/f")
}

// testFIFOBatchOrder keeps the order of events ingested in one call, received at the same
// time, whatever their ids and their deliveries' ids.
func testFIFOBatchOrder(t *testing.T, s store.Store) {
	fifoSubscriber(t, s, "f", "x")
	order := []string{"m", "z", "a", "q", "b"}
	var events []*store.Event
	for _, id := range order {
		events = append(events, event(id, "x", at(0)))
	}
	n := 100
	descending := func() string { n--; return fmt.Sprintf("fifo-%03d", n) } // against insertion order
	if _, err := s.IngestEvents(context.Background(), events, store.IngestOptions{NewID: descending}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range len(order) + 1 {
		now := at(time.Duration(i) * time.Minute)
		r := claimFIFO(t, s, now, "f")
		if len(r.names) == 0 {
			break
		}
		got = append(got, r.names...)
		c := r.claim(r.names[0])
		complete(t, s, now, success(c, now))
	}
	wantList(t, "fifo order", got, "m/f", "z/f", "a/f", "q/f", "b/f")
}

// testReleaseFenced releases only while the lease's token is the delivery's.
func testReleaseFenced(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	old := claimOf(t, s, at(0), at(time.Minute), 10, "a")
	wantList(t, "first claim", old.names, "e1/a")
	// The lease expired; another claim took the delivery over.
	r := claimOf(t, s, at(2*time.Minute), at(time.Hour), 10, "a")
	wantList(t, "after the lease expired", r.names, "e1/a")

	if err := s.ReleaseDeliveries(ctx, []store.Lease{old.lease("e1/a")}); err != nil {
		t.Fatal(err)
	}
	wantList(t, "after a stale release", claimOf(t, s, at(3*time.Minute), at(time.Hour), 10, "a").names)
	if err := s.ReleaseDeliveries(ctx, []store.Lease{r.lease("e1/a")}); err != nil {
		t.Fatal(err)
	}
	wantList(t, "after the holder's release", claimOf(t, s, at(3*time.Minute), at(time.Hour), 10, "a").names, "e1/a")
}

// testExtendLeases moves leases on while their tokens hold, and reports the rest lost.
func testExtendLeases(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	first := claimOf(t, s, at(0), at(time.Minute), 10, "a")
	wantSet(t, "first claim", first.names, "e1/a", "e2/a")

	lost, err := s.ExtendLeases(ctx, []store.Lease{first.lease("e1/a")}, at(10*time.Minute))
	if err != nil || len(lost) != 0 {
		t.Fatalf("extending a held lease: lost %q, %v", lost, err)
	}
	// e2/a's lease ran out at +1m; e1/a's was extended to +10m.
	wantList(t, "at +2m", claimOf(t, s, at(2*time.Minute), at(time.Hour), 10, "a").names, "e2/a")
	wantList(t, "just before +10m", claimOf(t, s, at(10*time.Minute-time.Millisecond), at(time.Hour), 10, "a").names)
	wantList(t, "at +10m", claimOf(t, s, at(10*time.Minute), at(time.Hour), 10, "a").names, "e1/a")

	// Both were taken over: the first claim's tokens hold neither.
	lost, err = s.ExtendLeases(ctx, []store.Lease{first.lease("e1/a"), first.lease("e2/a"), {DeliveryID: "nope", Token: 1}},
		at(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	wantSet(t, "lost", lost, deliveryOf(t, s, "e1", "a"), deliveryOf(t, s, "e2", "a"), "nope")
	// The stale extension did not cut the new leases (both to +1h) short.
	wantList(t, "at +31m", claimOf(t, s, at(31*time.Minute), at(2*time.Hour), 10, "a").names)
}

// testExtendAfterCompletion reports a lease lost once its round has completed or been released:
// an extension racing the completion must not lease the delivery again.
func testExtendAfterCompletion(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)), event("e3", "x", at(0)))
	r := claimAt(t, s, at(0))
	complete(t, s, at(time.Minute), failure(r.claim("e1/a"), at(time.Second), ptr(at(5*time.Minute)), 500),
		success(r.claim("e2/a"), at(time.Second)))
	if err := s.ReleaseDeliveries(ctx, []store.Lease{r.lease("e3/a")}); err != nil {
		t.Fatal(err)
	}
	lost, err := s.ExtendLeases(ctx, []store.Lease{r.lease("e1/a"), r.lease("e2/a"), r.lease("e3/a")}, at(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wantSet(t, "lost", lost, deliveryOf(t, s, "e1", "a"), deliveryOf(t, s, "e2", "a"), deliveryOf(t, s, "e3", "a"))
	wantDue(t, s, at(2*time.Minute), "a:+0s")
	wantList(t, "at +2m", claimAt(t, s, at(2*time.Minute)).names, "e3/a")
	wantList(t, "when the retry is due", claimAt(t, s, at(5*time.Minute)).names, "e1/a")
}

// testCompleteStale refuses the outcome of a round whose lease was taken over: its attempts
// happened, so they are logged and counted, but nothing else changes.
func testCompleteStale(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)))
	id := deliveryOf(t, s, "e1", "a")
	old := claimOf(t, s, at(0), at(time.Minute), 10, "a")
	wantList(t, "first claim", old.names, "e1/a")
	r := claimOf(t, s, at(2*time.Minute), at(time.Hour), 10, "a")
	wantList(t, "after the lease expired", r.names, "e1/a")
	if old.claim("e1/a").Token == r.claim("e1/a").Token {
		t.Fatalf("two claims of e1/a got the same token %d", r.claim("e1/a").Token)
	}

	gone := failure(old.claim("e1/a"), at(10*time.Second), nil, 500, 410)
	gone.Gone = true
	wantList(t, "stale", completeStale(t, s, at(3*time.Minute), gone), id)
	wantState(t, s, id, `pending attempts=2 step=0 next=+0s finished=- code=0 error=""`)
	wantLogAgrees(t, s, id)
	wantHealth(t, s, "a", `active=true deactivated=- error=false reason="" detected=- failures=0`)
	wantList(t, "still leased by the second claim", claimOf(t, s, at(4*time.Minute), at(time.Hour), 10, "a").names)

	wantList(t, "a stale success", completeStale(t, s, at(4*time.Minute), success(old.claim("e1/a"), at(20*time.Second))), id)
	wantState(t, s, id, `pending attempts=3 step=0 next=+0s finished=- code=0 error=""`)

	complete(t, s, at(5*time.Minute), failure(r.claim("e1/a"), at(4*time.Minute), ptr(at(time.Hour)), 503))
	wantState(t, s, id, `pending attempts=4 step=1 next=+1h0m0s finished=- code=503 error=""`)
	wantLogAgrees(t, s, id)
	wantHealth(t, s, "a", `active=true deactivated=- error=false reason="" detected=- failures=1`)
	// The applied outcome ended the lease: the old token does not apply now either.
	wantList(t, "stale after completion", completeStale(t, s, at(6*time.Minute), success(old.claim("e1/a"), at(5*time.Minute))), id)
	wantState(t, s, id, `pending attempts=5 step=1 next=+1h0m0s finished=- code=503 error=""`)
	wantLogAgrees(t, s, id)
}

// testPaused keeps a deactivated subscription's deliveries off the queue (claims, due times,
// counts), and puts them back on reactivation.
func testPaused(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(time.Second)))
	setActive(t, s, "a", false, at(time.Minute))

	wantDue(t, s, at(time.Minute), "b:+0s")
	wantStats(t, s, at(time.Minute), "pending=2 oldest=+0s active=1 error=0 inactive=1")
	wantList(t, "claim", claimAt(t, s, at(time.Minute)).names, "e1/b", "e2/b")
	wantList(t, "a named alone", claimOf(t, s, at(time.Minute), at(time.Hour), 10, "a").names)
	wantDue(t, s, at(time.Minute), "")

	// A retry asked for meanwhile waits for the reactivation too.
	if _, err := s.RetryDelivery(ctx, deliveryOf(t, s, "e2", "a"), at(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantList(t, "after a retry of e2/a", claimOf(t, s, at(2*time.Minute), at(time.Hour), 10, "a").names)
	wantDue(t, s, at(2*time.Minute), "")
	wantStats(t, s, at(2*time.Minute), "pending=2 oldest=- active=1 error=0 inactive=1")

	setActive(t, s, "a", true, at(3*time.Minute))
	wantDue(t, s, at(3*time.Minute), "a:+0s")
	wantStats(t, s, at(3*time.Minute), "pending=4 oldest=+0s active=2 error=0 inactive=0")
	wantList(t, "after reactivation", claimAt(t, s, at(3*time.Minute)).names, "e1/a", "e2/a")
}

// testPausedByGone pauses the backlog of a subscription that a 410 deactivated, a delivery
// whose round was in flight at the time included.
func testPausedByGone(t *testing.T, s store.Store) {
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(time.Second)), event("e3", "x", at(2*time.Second)))
	r := claimOf(t, s, at(time.Minute), at(time.Hour), 2, "a")
	wantList(t, "claim", r.names, "e1/a", "e2/a")

	o := failure(r.claim("e1/a"), at(time.Minute), nil, 410)
	o.Gone = true
	complete(t, s, at(2*time.Minute), o)
	wantHealth(t, s, "a", `active=false deactivated=+2m0s error=false reason="" detected=- failures=1`)
	// e2/a's round was in flight: it completes with a retry, which waits with the rest.
	complete(t, s, at(3*time.Minute), failure(r.claim("e2/a"), at(time.Minute), ptr(at(5*time.Minute)), 500))
	wantList(t, "claim", claimAt(t, s, at(10*time.Minute)).names)
	wantDue(t, s, at(10*time.Minute), "")
	wantStats(t, s, at(10*time.Minute), "pending=0 oldest=- active=0 error=0 inactive=1")

	setActive(t, s, "a", true, at(20*time.Minute))
	wantDue(t, s, at(20*time.Minute), "a:+2s")
	wantStats(t, s, at(20*time.Minute), "pending=2 oldest=+2s active=1 error=0 inactive=0")
	wantList(t, "after reactivation", claimAt(t, s, at(20*time.Minute)).names, "e3/a", "e2/a")
}

// testRetryLeased asks for a retry while the delivery's round is in flight: no second round
// runs beside it; its completion makes the delivery due again at once, using no extra step.
func testRetryLeased(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	failing, ok := deliveryOf(t, s, "e1", "a"), deliveryOf(t, s, "e2", "a")
	r := claimAt(t, s, at(0))
	wantSet(t, "claim", r.names, "e1/a", "e2/a")

	for _, id := range []string{failing, ok} {
		d, err := s.RetryDelivery(ctx, id, at(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if d.Status != store.Pending {
			t.Fatalf("RetryDelivery of %s in flight returned %s", name(d), state(d))
		}
	}
	wantList(t, "while in flight", claimAt(t, s, at(2*time.Minute)).names)
	wantDue(t, s, at(2*time.Minute), "")

	complete(t, s, at(3*time.Minute), failure(r.claim("e1/a"), at(time.Minute), ptr(at(time.Hour)), 500, 500),
		success(r.claim("e2/a"), at(time.Minute)))
	wantState(t, s, failing, `pending attempts=2 step=1 next=+3m0s finished=- code=500 error=""`)
	wantState(t, s, ok, `pending attempts=1 step=0 next=+3m0s finished=- code=200 error=""`)
	wantLogAgrees(t, s, failing)
	wantLogAgrees(t, s, ok)

	// The retry's round; the request is used up.
	r = claimAt(t, s, at(3*time.Minute))
	wantSet(t, "the retry", r.names, "e1/a", "e2/a")
	complete(t, s, at(4*time.Minute), success(r.claim("e1/a"), at(3*time.Minute)), success(r.claim("e2/a"), at(3*time.Minute)))
	wantState(t, s, failing, `succeeded attempts=3 step=1 next=- finished=+4m0s code=200 error=""`)
	wantState(t, s, ok, `succeeded attempts=2 step=0 next=- finished=+4m0s code=200 error=""`)
	wantLogAgrees(t, s, failing)
	wantDue(t, s, at(5*time.Minute), "")
}

// testRetryLeasedServedByNextRound asks for a retry while a round is in flight, then the round
// ends without completing. Released, it is over: the next round serves the request, and its
// completion schedules no other. Its lease expired, it may still be running (the claim takes it
// over): the request stays, and the next round's completion makes the delivery due again, so
// that a retry is never lost (at worst it is sent once more).
func testRetryLeasedServedByNextRound(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("released", "x", at(0)), event("expired", "x", at(0)))
	first := claimOf(t, s, at(0), at(time.Minute), 10, "a")
	wantSet(t, "first claim", first.names, "released/a", "expired/a")
	for _, n := range first.names {
		if _, err := s.RetryDelivery(ctx, first.claim(n).Delivery.ID, at(30*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ReleaseDeliveries(ctx, []store.Lease{first.lease("released/a")}); err != nil {
		t.Fatal(err)
	}

	r := claimAt(t, s, at(2*time.Minute))
	wantSet(t, "the next round", r.names, "released/a", "expired/a")
	wantList(t, "the first round's late outcome", completeStale(t, s, at(3*time.Minute),
		failure(first.claim("expired/a"), at(time.Second), nil, 500)), first.claim("expired/a").Delivery.ID)
	complete(t, s, at(3*time.Minute), success(r.claim("released/a"), at(2*time.Minute)), success(r.claim("expired/a"), at(2*time.Minute)))
	wantState(t, s, deliveryOf(t, s, "released", "a"), `succeeded attempts=1 step=0 next=- finished=+3m0s code=200 error=""`)
	wantState(t, s, deliveryOf(t, s, "expired", "a"), `pending attempts=2 step=0 next=+3m0s finished=- code=200 error=""`)
	wantDue(t, s, at(4*time.Minute), "a:+3m0s")
}

// testRetryLeasedThenDeleted asks for a retry while a round is in flight, then the subscription
// is deleted: the round's completion records what happened and leaves nothing pending.
func testRetryLeasedThenDeleted(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	r := claimAt(t, s, at(0))
	for _, n := range []string{"e1/a", "e2/a"} {
		if _, err := s.RetryDelivery(ctx, r.claim(n).Delivery.ID, at(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteSubscription(ctx, "a", at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	complete(t, s, at(3*time.Minute), failure(r.claim("e1/a"), at(time.Minute), ptr(at(time.Hour)), 500),
		success(r.claim("e2/a"), at(time.Minute)))
	wantState(t, s, deliveryOf(t, s, "e1", "a"), `failed attempts=1 step=0 next=- finished=+3m0s code=500 error="subscription deleted"`)
	wantState(t, s, deliveryOf(t, s, "e2", "a"), `succeeded attempts=1 step=0 next=- finished=+3m0s code=200 error=""`)
	wantDue(t, s, at(4*time.Minute), "")
	if _, err := s.RetryDelivery(ctx, deliveryOf(t, s, "e1", "a"), at(5*time.Minute)); !errors.Is(err, store.ErrSubscriptionGone) {
		t.Fatalf("RetryDelivery after the delete: got %v, want ErrSubscriptionGone", err)
	}
}

// testDeleteLeavesLeased fails a deleted subscription's deliveries that wait, and leaves the
// one in flight to its round.
func testDeleteLeavesLeased(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)))
	r := claimOf(t, s, at(0), at(time.Hour), 1, "a")
	wantList(t, "claim", r.names, "e1/a")
	if err := s.DeleteSubscription(ctx, "a", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, deliveryOf(t, s, "e1", "a"), `pending attempts=0 step=0 next=+0s finished=- code=0 error=""`)
	wantState(t, s, deliveryOf(t, s, "e2", "a"), `failed attempts=0 step=0 next=- finished=+1m0s code=0 error="subscription deleted"`)
	if _, err := s.RetryDelivery(ctx, deliveryOf(t, s, "e2", "a"), at(time.Minute)); !errors.Is(err, store.ErrSubscriptionGone) {
		t.Fatalf("RetryDelivery of a deleted subscription's delivery: got %v, want ErrSubscriptionGone", err)
	}
	complete(t, s, at(2*time.Minute), success(r.claim("e1/a"), at(time.Minute)))
	wantState(t, s, deliveryOf(t, s, "e1", "a"), `succeeded attempts=1 step=0 next=- finished=+2m0s code=200 error=""`)
}

// testPruneInBatches prunes at most max deliveries a call, and says when there is more.
func testPruneInBatches(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	var events []*store.Event
	for i := range 7 {
		events = append(events, event(fmt.Sprintf("e%d", i), "x", at(0)))
	}
	for i := range 3 {
		events = append(events, event(fmt.Sprintf("unheard%d", i), "nobody", at(0)))
	}
	mustIngest(t, s, events...)
	r := claimAt(t, s, at(0))
	var outcomes []*store.Outcome
	for _, c := range r.claims {
		outcomes = append(outcomes, success(c, at(time.Second)))
	}
	complete(t, s, at(time.Minute), outcomes...)

	const max = 3
	var counts []int
	for {
		n, more, err := s.Prune(ctx, at(time.Hour), max)
		if err != nil {
			t.Fatal(err)
		}
		if n > max {
			t.Fatalf("Prune deleted %d deliveries, max %d", n, max)
		}
		counts = append(counts, n)
		if !more {
			break
		}
		if len(counts) > 10 {
			t.Fatalf("Prune still has more after %d calls: %v", len(counts), counts)
		}
	}
	if counts[0] != max {
		t.Errorf("first batch: %d, want %d", counts[0], max)
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != 7 {
		t.Errorf("batches %v deleted %d deliveries, want 7", counts, total)
	}
	for _, ev := range events {
		if _, _, err := s.GetEvent(ctx, ev.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("event %s: got %v, want it pruned", ev.ID, err)
		}
	}
	if n, more, err := s.Prune(ctx, at(time.Hour), max); err != nil || n != 0 || more {
		t.Errorf("Prune when done: %d, more=%t, %v; want 0, false", n, more, err)
	}
}

// testOutcomesKeepVersion completes outcomes that change a subscription's state: error state,
// its end, deactivation. None moves its Version or UpdatedAt.
func testOutcomesKeepVersion(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	for i := range 5 {
		mustIngest(t, s, event(fmt.Sprintf("e%d", i), "x", at(0)))
	}
	r := claimAt(t, s, at(0))
	check := func(what, health string) {
		t.Helper()
		wantHealth(t, s, "a", health)
		sub, err := s.GetSubscription(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if sub.Version != 1 || !sub.UpdatedAt.Equal(base) {
			t.Fatalf("after %s: version %d, updated %s; want 1, +0s", what, sub.Version, rel(&sub.UpdatedAt))
		}
	}
	retry := ptr(at(time.Hour))
	complete(t, s, at(time.Minute), failure(r.claim("e0/a"), at(time.Second), retry, 500, 500),
		failure(r.claim("e1/a"), at(time.Second), retry, 500))
	check("error state", `active=true deactivated=- error=true reason="HTTP 500 from target" detected=+1m0s failures=3`)
	complete(t, s, at(2*time.Minute), success(r.claim("e2/a"), at(time.Minute)))
	check("a success", `active=true deactivated=- error=false reason="" detected=- failures=0`)
	gone := failure(r.claim("e3/a"), at(2*time.Minute), nil, 410)
	gone.Gone = true
	complete(t, s, at(3*time.Minute), gone)
	check("a 410", `active=false deactivated=+3m0s error=false reason="" detected=- failures=1`)
}

// testGenerationGrows reads SubscriptionGeneration after every kind of committed change to a
// subscription that a cache of them must see.
func testGenerationGrows(t *testing.T, s store.Store) {
	ctx := context.Background()
	last := s.SubscriptionGeneration()
	grew := func(what string) {
		t.Helper()
		if g := s.SubscriptionGeneration(); g <= last {
			t.Errorf("after %s: generation %d, was %d", what, g, last)
		} else {
			last = g
		}
	}
	subscriber(t, s, "a", "x")
	grew("create")
	if _, err := s.UpdateSubscription(ctx, "a", func(sub *store.Subscription) error {
		sub.URL = "https://example.org/v2"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	grew("update")
	setActive(t, s, "a", false, at(0))
	grew("deactivation")
	setActive(t, s, "a", true, at(0))
	grew("reactivation")

	sync := func(subs ...*store.Subscription) {
		t.Helper()
		if _, err := s.SyncFileSubscriptions(ctx, subs, base); err != nil {
			t.Fatal(err)
		}
	}
	sync(declared("file", "https://file.example"))
	grew("a sync that creates")
	sync(declared("file", "https://file.example/v2"))
	grew("a sync that updates")
	sync()
	grew("a sync that deletes")

	mustIngest(t, s, event("e1", "x", at(0)), event("e2", "x", at(0)), event("e3", "x", at(0)))
	r := claimAt(t, s, at(0))
	retry := ptr(at(time.Hour))
	complete(t, s, at(time.Minute), failure(r.claim("e1/a"), at(time.Second), retry, 500, 500, 500))
	grew("a completion that sets the error state")
	complete(t, s, at(2*time.Minute), success(r.claim("e2/a"), at(time.Minute)))
	grew("a completion that ends the error state")
	gone := failure(r.claim("e3/a"), at(2*time.Minute), nil, 410)
	gone.Gone = true
	complete(t, s, at(3*time.Minute), gone)
	grew("a completion that deactivates")

	if err := s.DeleteSubscription(ctx, "a", at(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	grew("delete")
}

// testFanOutFollowsEveryChange ingests after each kind of subscription change: a backend that
// keeps an index of subscriptions for fan-out must never fan out with a stale one.
func testFanOutFollowsEveryChange(t *testing.T, s store.Store) {
	ctx := context.Background()
	targets := func(id string) string {
		t.Helper()
		res := mustIngest(t, s, event(id, "x", at(0)))
		got := slices.Clone(res[0].Targets)
		slices.Sort(got)
		return strings.Join(got, ",")
	}
	subscriber(t, s, "a", "x")
	if got := targets("e1"); got != "a" {
		t.Fatalf("after creating a: %q", got)
	}
	subscriber(t, s, "b", "x", "y")
	subscriber(t, s, "c", store.AllEvents)
	if got := targets("e2"); got != "a,b,c" {
		t.Fatalf("after creating b and c: %q", got)
	}
	update := func(id string, change func(*store.Subscription)) {
		t.Helper()
		if _, err := s.UpdateSubscription(ctx, id, func(sub *store.Subscription) error { change(sub); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	update("a", func(sub *store.Subscription) { sub.Active = false })
	if got := targets("e3"); got != "b,c" {
		t.Fatalf("after deactivating a: %q", got)
	}
	update("b", func(sub *store.Subscription) { sub.Events = []string{"y"} })
	if got := targets("e4"); got != "c" {
		t.Fatalf("after b stopped taking x: %q", got)
	}
	update("a", store.Reactivate)
	if err := s.DeleteSubscription(ctx, "c", at(0)); err != nil {
		t.Fatal(err)
	}
	if got := targets("e5"); got != "a" {
		t.Fatalf("after reactivating a and deleting c: %q", got)
	}
	// A 410 deactivates a through a completion.
	r := claimAt(t, s, at(time.Minute))
	g := failure(r.claim("e5/a"), at(time.Minute), nil, 410)
	g.Gone = true
	complete(t, s, at(time.Minute), g)
	if got := targets("e6"); got != "" {
		t.Fatalf("after a 410 deactivated a: %q", got)
	}
	if _, err := s.SyncFileSubscriptions(ctx, []*store.Subscription{{ID: "f", URL: "https://example.com/f", Events: []string{"x"}}}, at(0)); err != nil {
		t.Fatal(err)
	}
	if got := targets("e7"); got != "f" {
		t.Fatalf("after a file sync declared f: %q", got)
	}
}

// testIngestLeasesAtBirth stores the deliveries IngestOptions.Lease answers yes for leased to
// the caller, as a claim would: not claimable until the lease ends, fenced by the token
// returned, and released or completed like any claim. The others are stored as usual.
func testIngestLeasesAtBirth(t *testing.T, s store.Store) {
	ctx := context.Background()
	subscriber(t, s, "a", "x")
	subscriber(t, s, "b", "x")
	var asked []string
	res, err := s.IngestEvents(ctx, []*store.Event{event("e1", "x", at(0)), event("e2", "x", at(time.Second))},
		store.IngestOptions{NewID: newID, LeaseUntil: at(time.Minute), Lease: func(sub string) bool {
			asked = append(asked, sub)
			return sub == "a"
		}})
	if err != nil {
		t.Fatal(err)
	}
	if asked == nil {
		t.Skip("this backend leases nothing at birth (it may: IngestOptions.Lease)")
	}
	wantList(t, "asked", asked, "a", "b", "a", "b")
	var born []*store.Claim
	for i, r := range res {
		if len(r.Claims) != 1 {
			t.Fatalf("event %d: %d claims, want 1 (a's)", i, len(r.Claims))
		}
		c := r.Claims[0]
		d := c.Delivery
		if d.SubscriptionID != "a" || d.EventID != r.ID || d.EventType != "x" || d.Status != store.Pending || d.Attempts != 0 ||
			d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(at(time.Duration(i)*time.Second)) || d.ID != deliveryOf(t, s, r.ID, "a") {
			t.Fatalf("event %d: claim %+v", i, d)
		}
		if c.Event.ID != r.ID || string(c.Event.Payload) != `{"id":"`+r.ID+`"}` {
			t.Fatalf("event %d: claimed event %+v", i, c.Event)
		}
		born = append(born, c)
	}
	wantList(t, "claim while leased at birth", claimAt(t, s, at(30*time.Second)).names, "e1/b", "e2/b")
	wantDue(t, s, at(30*time.Second), "")

	// The token fences: released with it, e2/a is claimable again; e1/a completes with it.
	if err := s.ReleaseDeliveries(ctx, []store.Lease{{DeliveryID: born[1].Delivery.ID, Token: born[1].Token}}); err != nil {
		t.Fatal(err)
	}
	wantList(t, "after the release", claimOf(t, s, at(30*time.Second), at(time.Hour), 10, "a").names, "e2/a")
	complete(t, s, at(40*time.Second), success(born[0], at(35*time.Second)))
	wantState(t, s, born[0].Delivery.ID, `succeeded attempts=1 step=0 next=- finished=+40s code=200 error=""`)
	wantLogAgrees(t, s, born[0].Delivery.ID)
	if stale := completeStale(t, s, at(50*time.Second), success(born[1], at(45*time.Second))); len(stale) != 1 {
		t.Fatalf("the birth token of a released and claimed again delivery still applies")
	}
}
