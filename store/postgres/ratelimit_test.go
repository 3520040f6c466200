package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

// Two replicas claiming a subscription with rate_limit R as fast as they can get R a second
// between them, not R each: the claims share the subscription's rate_next_at. Time is the
// claims' Now, moved in steps, so the count is exact rather than a measurement.
func TestRateLimitHoldsAcrossReplicas(t *testing.T) {
	const (
		rate   = 10 // a second
		window = 5 * time.Second
		step   = 20 * time.Millisecond
	)
	ctx := context.Background()
	a, b := twoStores(t)
	if err := a.CreateSubscription(ctx, subscription("paced", store.Policy{RateLimit: rate})); err != nil {
		t.Fatal(err)
	}
	ingest(t, a, 3*rate*int(window/time.Second))

	start := base.Add(time.Minute) // every delivery is due
	var got [2]int
	for now := start; now.Before(start.Add(window)); now = now.Add(step) {
		var wg sync.WaitGroup
		for i, s := range []store.Store{a, b} {
			wg.Go(func() {
				res, err := s.ClaimDeliveries(ctx, store.ClaimOptions{Now: now, LeaseUntil: now.Add(time.Hour),
					Subscriptions: []store.SubscriptionClaim{{ID: "paced", Limit: 32}}})
				if err != nil {
					t.Error(err)
					return
				}
				got[i] += len(res.Claims)
				if next, ok := res.NextDue["paced"]; !ok || !next.After(now) {
					t.Errorf("at +%v: NextDue %v (%v), want one after now: its rate allows no more now", now.Sub(start), next, ok)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	total := got[0] + got[1]
	t.Logf("in %v at %d/s: replica A claimed %d, replica B %d, %d in all", window, rate, got[0], got[1], total)
	if want := rate * int(window/time.Second); total < want-rate || total > want+rate {
		t.Fatalf("%d claimed in %v by two replicas, want about %d (%d a second), not twice that", total, window, want, rate)
	}
}
