package gateway

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

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
	// running is true while run claims deliveries (readyz asks).
	running atomic.Bool
	metrics *metrics

	mu        sync.Mutex
	inFlight  map[string]int            // rounds in flight, by subscription
	held      map[string][]*store.Claim // claims waiting for a slot of their subscription
	total     int
	heldTotal int
	skipIdle  bool // a claim that skipped subscriptions found nothing; see claim
	stopping  bool
	workCtx   context.Context
	wg        sync.WaitGroup
}

func newDispatcher(st store.Store, d *deliverer, cfg config.Delivery, now func() time.Time, log *slog.Logger, m *metrics, opts Options) *dispatcher {
	// A round is at most quick_retries+1 attempts with waits between them. The lease outlasts a
	// round and the one a held claim waits behind, with room to spare.
	round := time.Duration(cfg.QuickRetries+1) * (cfg.Timeout + d.client.RetryWaitMax)
	disp := &dispatcher{
		store:           st,
		deliverer:       d,
		cfg:             cfg,
		now:             now,
		log:             log,
		metrics:         m,
		workers:         opts.Workers,
		perSubscription: opts.PerSubscription,
		poll:            opts.PollInterval,
		lease:           3*round + 30*time.Second,
		drain:           cfg.Timeout + 5*time.Second,
		wakeC:           make(chan struct{}, 1),
		freed:           make(chan struct{}, 1),
		inFlight:        make(map[string]int),
		held:            make(map[string][]*store.Claim),
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
	d.mu.Lock()
	d.skipIdle = false
	d.mu.Unlock()
	select {
	case d.wakeC <- struct{}{}:
	default:
	}
}

// run claims and delivers until ctx ends, then stops claiming, releases the claims it holds,
// waits up to drain for the rounds in flight, cancels the rest (their claims are released), and
// returns once all have ended.
func (d *dispatcher) run(ctx context.Context) {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	d.mu.Lock()
	d.workCtx = workCtx
	d.mu.Unlock()
	d.running.Store(true)
	defer d.running.Store(false)
	for ctx.Err() == nil {
		if d.claim(ctx) > 0 {
			continue // there may be more due
		}
		d.wait(ctx)
	}

	d.mu.Lock()
	d.stopping = true
	var held []string
	for _, q := range d.held {
		for _, c := range q {
			held = append(held, c.Delivery.ID)
		}
	}
	clear(d.held)
	d.heldTotal = 0
	d.mu.Unlock()
	if err := d.store.ReleaseDeliveries(context.WithoutCancel(ctx), held); err != nil {
		d.log.Error("shutdown: releasing held deliveries", "err", err)
	}
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d.drain):
		d.log.Warn("shutdown: cancelling delivery attempts still in flight", "in_flight", d.inFlightTotal())
		cancelWork()
		<-done
	}
}

// claim leases due deliveries for the free slots and starts their rounds. A subscription at
// its limit keeps up to perSubscription more claims waiting in memory (still leased), started
// as its rounds end, so that one busy subscription is not claimed and released over and over;
// subscriptions with that many waiting are skipped by the claim.
func (d *dispatcher) claim(ctx context.Context) int {
	d.mu.Lock()
	room := d.workers - d.total - d.heldTotal
	var skip []string
	for id, n := range d.inFlight {
		if n+len(d.held[id]) >= 2*d.perSubscription {
			skip = append(skip, id)
		}
	}
	busy, skipIdle := d.total > 0, d.skipIdle
	d.mu.Unlock()
	// Claim in batches: while rounds are in flight, wait until a quarter of the slots are free
	// rather than claiming (a transaction each) for every slot that frees. A claim that skipped
	// subscriptions and found nothing is not repeated until new work or the poll: it has to
	// read past the skipped subscriptions' backlog.
	if room <= 0 || busy && room < max(1, d.workers/4) || len(skip) > 0 && skipIdle {
		return 0
	}
	now := d.now().UTC()
	// At most what two subscriptions can take: rows past a subscription's room are released,
	// and a large claim from a backlog of one would release most of what it took.
	limit := min(room, 2*d.perSubscription)
	claims, err := d.store.ClaimDeliveries(ctx, store.ClaimOptions{Now: now, LeaseUntil: now.Add(d.lease), Limit: limit, Skip: skip})
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("claiming deliveries", "err", err)
		}
		return 0
	}
	var release []string
	d.mu.Lock()
	if len(skip) > 0 {
		d.skipIdle = len(claims) == 0
	}
	for _, c := range claims {
		sub := c.Delivery.SubscriptionID
		switch {
		case d.inFlight[sub] < d.perSubscription:
			d.startLocked(c)
		case len(d.held[sub]) < d.perSubscription:
			d.held[sub] = append(d.held[sub], c)
			d.heldTotal++
		default:
			release = append(release, c.Delivery.ID)
		}
	}
	d.mu.Unlock()
	if len(release) > 0 {
		if err := d.store.ReleaseDeliveries(context.WithoutCancel(ctx), release); err != nil {
			d.log.Error("releasing deliveries", "err", err)
		}
	}
	return len(claims)
}

// startLocked starts a claim's round; d.mu is held.
func (d *dispatcher) startLocked(c *store.Claim) {
	d.inFlight[c.Delivery.SubscriptionID]++
	d.total++
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.attempt(d.workCtx, c)
	}()
}

// attempt runs one round for a claim and records its outcome.
func (d *dispatcher) attempt(ctx context.Context, c *store.Claim) {
	defer d.done(c.Delivery.SubscriptionID)
	log := d.log.With("delivery_id", c.Delivery.ID, "event_id", c.Event.ID, "subscription_id", c.Subscription.ID)
	if sc := trace.SpanContextFromContext(withTraceParent(ctx, c.Event.TraceParent)); sc.HasTraceID() {
		log = log.With("trace_id", sc.TraceID().String())
	}
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
	d.metrics.delivered(o)
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

// done frees a slot of sub, starting the next claim it holds, if any.
func (d *dispatcher) done(sub string) {
	d.mu.Lock()
	d.inFlight[sub]--
	d.total--
	if q := d.held[sub]; len(q) > 0 && !d.stopping {
		d.held[sub] = q[1:]
		if len(q) == 1 {
			delete(d.held, sub)
		}
		d.heldTotal--
		d.startLocked(q[0])
	}
	if d.inFlight[sub] <= 0 {
		delete(d.inFlight, sub)
	}
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
		d.mu.Lock()
		d.skipIdle = false
		d.mu.Unlock()
	}
}
