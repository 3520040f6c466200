package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

// testSharedRateLimit claims a rate-limited subscription (2 a second) with room for ten: each
// claim takes a second's worth of its rate and no more, none before the interval those took has
// passed, and NextDue says when the next may be taken. A fifo one gets one at a time, spaced
// the same way.
func testSharedRateLimit(t *testing.T, s store.Store) {
	sub := sample("paced", base)
	sub.Events, sub.Policy.RateLimit = []string{"x"}, 2
	mustCreate(t, s, sub)
	fifo := sample("paced-fifo", base)
	fifo.Events, fifo.Policy = []string{"y"}, store.Policy{RateLimit: 2, Ordering: store.FIFO}
	mustCreate(t, s, fifo)
	var events []*store.Event
	for i := range 8 {
		events = append(events, event(fmt.Sprintf("x%d", i), "x", at(0)), event(fmt.Sprintf("y%d", i), "y", at(0)))
	}
	mustIngest(t, s, events...)
	until := at(time.Hour)

	r := claimOf(t, s, at(time.Second), until, 10, "paced")
	wantSet(t, "at +1s", r.names, "x0/paced", "x1/paced")
	wantNextDue(t, r, "paced:+2s") // two taken, half a second apart: the next a second on
	r = claimOf(t, s, at(1500*time.Millisecond), until, 10, "paced")
	wantList(t, "at +1.5s", r.names)
	wantNextDue(t, r, "paced:+2s")
	r = claimOf(t, s, at(2*time.Second), until, 10, "paced")
	wantSet(t, "at +2s", r.names, "x2/paced", "x3/paced")
	wantNextDue(t, r, "paced:+3s")
	// Idle for a while, it is not owed what it did not take: a second's worth again.
	r = claimOf(t, s, at(time.Minute), until, 10, "paced")
	wantSet(t, "at +1m", r.names, "x4/paced", "x5/paced")
	wantNextDue(t, r, "paced:+1m1s")

	claimHead := func(now time.Time) round {
		return claim(t, s, store.ClaimOptions{Now: now, LeaseUntil: until,
			Subscriptions: []store.SubscriptionClaim{{ID: "paced-fifo", Limit: 10, FIFO: true}}})
	}
	r = claimHead(at(time.Second))
	wantList(t, "fifo at +1s", r.names, "y0/paced-fifo")
	complete(t, s, at(time.Second), success(r.claim("y0/paced-fifo"), at(time.Second)))
	r = claimHead(at(1200 * time.Millisecond))
	wantList(t, "fifo at +1.2s, y0 done", r.names)
	wantNextDue(t, r, "paced-fifo:+1.5s")
	r = claimHead(at(1500 * time.Millisecond))
	wantList(t, "fifo at +1.5s", r.names, "y1/paced-fifo")
}
