package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// dispatcher claims due deliveries from the store, hands each to a goroutine of its own for a
// round of attempts, and records the outcomes. It never has more than workers rounds in
// flight, nor more than perSubscription for one subscription, so that a slow or dead target
// cannot hold up the others. It wakes when events are committed, and otherwise when the next
// delivery is due (looking again at least every poll).
type dispatcher struct {
	store     store.Store
	deliverer *deliverer
	outcomes  *batcher[*store.Outcome, struct{}]
	cfg       config.Delivery
	now       func() time.Time
	log       *slog.Logger

	workers         int
	perSubscription int
	poll            time.Duration
	lease           time.Duration
	// drain bounds how long a shutdown waits for rounds in flight before cancelling them.
	drain time.Duration

	wakeC chan struct{}
	freed chan struct{}

	mu       sync.Mutex
	inFlight map[string]int // by subscription
	total    int
}

func newDispatcher(st store.Store, d *deliverer, cfg config.Delivery, now func() time.Time, log *slog.Logger, opts Options) *dispatcher {
	// A round is at most quick_retries+1 attempts with waits between them; the lease outlasts it.
	round := time.Duration(cfg.QuickRetries+1)*(cfg.Timeout+d.client.RetryWaitMax) + 30*time.Second
	disp := &dispatcher{
		store:           st,
		deliverer:       d,
		cfg:             cfg,
		now:             now,
		log:             log,
		workers:         opts.Workers,
		perSubscription: opts.PerSubscription,
		poll:            opts.PollInterval,
		lease:           round,
		drain:           cfg.Timeout + 5*time.Second,
		wakeC:           make(chan struct{}, 1),
		freed:           make(chan struct{}, 1),
		inFlight:        make(map[string]int),
	}
	policy := store.ErrorPolicy{ErrorStateAfter: cfg.ErrorStateAfter, DisableAfter: cfg.DisableAfter}
	disp.outcomes = newBatcher(256, nil, func(ctx context.Context, os []*store.Outcome) ([]struct{}, error) {
		if err := st.CompleteDeliveries(ctx, os, policy, now().UTC()); err != nil {
			return nil, err
		}
		return make([]struct{}, len(os)), nil
	})
	return disp
}

// wake makes the dispatcher look for due deliveries now.
func (d *dispatcher) wake() {
	select {
	case d.wakeC <- struct{}{}:
	default:
	}
}

// run claims and delivers until ctx ends, then stops claiming, waits up to drain for the rounds
// in flight, cancels the rest (their claims are released), and returns once all have ended.
func (d *dispatcher) run(ctx context.Context) {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	for ctx.Err() == nil {
		claimed := d.claim(ctx, workCtx, &wg)
		if claimed > 0 {
			continue // there may be more due
		}
		d.wait(ctx)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d.drain):
		d.log.Warn("shutdown: cancelling delivery attempts still in flight", "in_flight", d.inFlightTotal())
		cancelWork()
		<-done
	}
}

// claim leases as many due deliveries as there are free slots and starts their rounds.
func (d *dispatcher) claim(ctx, workCtx context.Context, wg *sync.WaitGroup) int {
	d.mu.Lock()
	free := d.workers - d.total
	var skip []string
	for id, n := range d.inFlight {
		if n >= d.perSubscription {
			skip = append(skip, id)
		}
	}
	d.mu.Unlock()
	if free <= 0 {
		return 0
	}
	now := d.now().UTC()
	claims, err := d.store.ClaimDeliveries(ctx, store.ClaimOptions{Now: now, LeaseUntil: now.Add(d.lease), Limit: free, Skip: skip})
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("claiming deliveries", "err", err)
		}
		return 0
	}
	var release []string
	started := 0
	d.mu.Lock()
	for _, c := range claims {
		sub := c.Delivery.SubscriptionID
		if d.inFlight[sub] >= d.perSubscription {
			release = append(release, c.Delivery.ID) // several of one subscription in one claim
			continue
		}
		d.inFlight[sub]++
		d.total++
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.attempt(workCtx, c)
		}()
	}
	d.mu.Unlock()
	if len(release) > 0 {
		if err := d.store.ReleaseDeliveries(context.WithoutCancel(ctx), release); err != nil {
			d.log.Error("releasing deliveries", "err", err)
		}
	}
	return started
}

// attempt runs one round for a claim and records its outcome.
func (d *dispatcher) attempt(ctx context.Context, c *store.Claim) {
	defer d.done(c.Delivery.SubscriptionID)
	log := d.log.With("delivery_id", c.Delivery.ID, "event_id", c.Event.ID, "subscription_id", c.Subscription.ID)
	o := d.deliverer.deliver(ctx, c)
	if o == nil { // cancelled by a shutdown: another run (or process) takes it from here
		if err := d.store.ReleaseDeliveries(context.WithoutCancel(ctx), []string{c.Delivery.ID}); err != nil {
			log.Error("releasing a cancelled delivery", "err", err)
		}
		return
	}
	if _, err := d.outcomes.Do(context.WithoutCancel(ctx), o); err != nil {
		// The lease runs out and the delivery is claimed again: at least once, not lost.
		log.Error("recording a delivery outcome", "err", err)
		return
	}
	last := o.Attempts[len(o.Attempts)-1]
	switch {
	case o.Succeeded:
		log.Debug("delivered", "attempts", len(o.Attempts), "status", last.StatusCode)
	case o.NextAttemptAt != nil:
		log.Info("delivery failed; retrying later", "attempts", len(o.Attempts), "reason", o.Reason, "next_attempt_at", o.NextAttemptAt)
	default:
		log.Warn("delivery failed for good", "attempts", len(o.Attempts), "reason", o.Reason)
	}
}

func (d *dispatcher) done(sub string) {
	d.mu.Lock()
	d.inFlight[sub]--
	if d.inFlight[sub] <= 0 {
		delete(d.inFlight, sub)
	}
	d.total--
	d.mu.Unlock()
	select {
	case d.freed <- struct{}{}:
	default:
	}
}

func (d *dispatcher) inFlightTotal() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

// wait sleeps until woken, a slot frees, the next delivery is due, or poll has passed. A
// delivery already due that claim did not take (its subscription is at its limit) waits for a
// slot, not for a timer that would spin.
func (d *dispatcher) wait(ctx context.Context) {
	wait := d.poll
	if next, ok, err := d.store.NextDue(ctx); err == nil && ok {
		if until := next.Sub(d.now()); until > 0 && until < wait {
			wait = until
		}
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-d.wakeC:
	case <-d.freed:
	case <-timer.C:
	}
}
