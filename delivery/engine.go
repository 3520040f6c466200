// Package delivery is the gateway's delivery engine. It claims due deliveries from the store,
// subscription by subscription, makes each round of HTTP attempts through go-retryablehttp and
// the subscription's plugins, and records every attempt and outcome.
//
// Each subscription has a lane of its own: its own slots (max_in_flight), its own rate limit
// and order, and its own health. A subscription that fails drops to one delivery at a time (a
// probe) until an attempt succeeds, and waiting between quick retries holds no slot, so one
// slow or failing target costs only itself: the others' claims, slots and connections are
// untouched.
//
// Claims are fenced: each carries a token, leases are renewed while rounds run, and an
// outcome applies only while its token holds. Before every attempt the engine checks the
// subscription as it is now: a deleted or deactivated one is not sent to, a changed one is
// sent to as changed.
package delivery

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/internal/groupcommit"
	"github.com/webhookgw/gateway/internal/traceparent"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/store"
)

// Options are what New needs. Store, Delivery and Plugins are required.
type Options struct {
	Store    store.Store
	Delivery config.Delivery
	Security config.Security
	Plugins  *plugins.Registry
	// Now defaults to time.Now; tests pin it.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider makes the attempt spans; nil makes none (the producer's trace context is
	// still passed on).
	TracerProvider trace.TracerProvider
	// UserAgent is sent with every attempt.
	UserAgent string
	// OnOutcome, if not nil, is called with every outcome once it is recorded.
	OnOutcome func(*store.Outcome)

	// PollInterval is the longest the engine goes without asking the store which
	// subscriptions have due deliveries (default 5s). Commits, retries and reactivations wake
	// it at once, and it keeps each subscription's next due time; tests that move Now shorten
	// it.
	PollInterval time.Duration
	// QuickRetryWait is the first wait between quick retries, doubled for each (default 1s).
	QuickRetryWait time.Duration
	// Lease is how long a claim is leased for (default config.DefaultLease, delivery.lease);
	// leases are renewed every third of it while their rounds run, so that a round loses its
	// lease only when two renewals in a row fail to reach the store.
	Lease time.Duration
	// Drain bounds how long a shutdown waits for rounds in flight before cancelling them
	// (default delivery.timeout + 5s).
	Drain time.Duration
}

// Engine delivers the store's due deliveries. Run it once; Wake and Notify tell it about new
// work.
type Engine struct {
	store     store.Store
	cfg       config.Delivery
	plugins   *plugins.Registry
	client    *retryablehttp.Client
	transport *http.Transport // under client; its idle connections close when Run returns
	schedule  schedule
	now       func() time.Time
	log       *slog.Logger
	userAgent string
	onOutcome func(*store.Outcome)
	policy    store.ErrorPolicy
	poll      time.Duration
	lease     time.Duration
	drain     time.Duration
	outcomes  *groupcommit.Batcher[*store.Outcome, bool]
	chains    chains

	kick    chan struct{}
	stopped chan struct{} // closed when Run stops claiming: nothing waits for a slot or a rate any more
	running atomic.Bool
	rounds  sync.WaitGroup

	mu      sync.Mutex
	lanes   map[string]*lane
	held    map[string]*round // claimed rounds, by delivery id
	active  int               // slots taken, across lanes
	births  int               // rounds reserved at birth, not yet handed off
	freed   chan struct{}     // closed (and replaced) whenever a slot frees
	refresh bool              // ask the store about every subscription
	closed  bool              // Run has stopped claiming: no round starts any more
	workCtx context.Context

	renewMu sync.Mutex
	renewed time.Time // when leases were last renewed, on the injected clock
}

// New returns an Engine for opts.
func New(opts Options) *Engine {
	e := &Engine{
		store:     opts.Store,
		cfg:       opts.Delivery,
		plugins:   opts.Plugins,
		now:       opts.Now,
		log:       cmp.Or(opts.Logger, slog.Default()),
		userAgent: opts.UserAgent,
		onOutcome: opts.OnOutcome,
		policy:    store.ErrorPolicy{ErrorStateAfter: opts.Delivery.ErrorStateAfter, DisableAfter: opts.Delivery.DisableAfter},
		poll:      cmp.Or(opts.PollInterval, 5*time.Second),
		lease:     cmp.Or(opts.Lease, config.DefaultLease),
		drain:     cmp.Or(opts.Drain, opts.Delivery.Timeout+5*time.Second),
		kick:      make(chan struct{}, 1),
		stopped:   make(chan struct{}),
		lanes:     make(map[string]*lane),
		held:      make(map[string]*round),
		freed:     make(chan struct{}),
	}
	if opts.Now == nil {
		e.now = time.Now
	}
	e.cfg.MaxInFlight = cmp.Or(e.cfg.MaxInFlight, 512)
	e.cfg.MaxInFlightPerSubscription = cmp.Or(e.cfg.MaxInFlightPerSubscription, 32)
	e.schedule = schedule{waits: opts.Delivery.Schedule, jitter: opts.Delivery.Jitter, now: e.now}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	quickWait := cmp.Or(opts.QuickRetryWait, time.Second)
	httpClient, transport := newHTTPClient(opts.Security, opts.Delivery.Timeout, tp)
	e.transport = transport
	e.client = &retryablehttp.Client{
		HTTPClient:   httpClient,
		Logger:       nil,
		RetryWaitMin: quickWait,
		RetryWaitMax: 8 * quickWait,
		RetryMax:     opts.Delivery.QuickRetries,
		CheckRetry:   e.checkRetry,
		Backoff:      quickBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		PrepareRetry: e.prepare, // re-signs: plugins run again with the new timestamp
	}
	e.outcomes = groupcommit.New(groupcommit.Options[*store.Outcome]{Max: 256},
		func(ctx context.Context, os []*store.Outcome) ([]bool, error) {
			e.takeTokens(os)
			stale, err := e.store.CompleteDeliveries(ctx, os, e.policy, e.now().UTC())
			if err != nil {
				return nil, err
			}
			res := make([]bool, len(os))
			for i, o := range os {
				res[i] = slices.Contains(stale, o.DeliveryID)
			}
			return res, nil
		})
	return e
}

// Wake makes the engine ask the store about every subscription's due deliveries now (after a
// retry, a reactivation, a file sync).
func (e *Engine) Wake() {
	e.markRefresh()
	e.kickLoop()
}

// markRefresh makes the loop ask the store about every subscription at its next turn.
func (e *Engine) markRefresh() {
	e.mu.Lock()
	e.refresh = true
	for _, l := range e.lanes {
		// A retry of a delivery in flight makes it due when its round ends.
		// (A claim takes its slots before it asks the store: active covers its rounds to be.)
		l.recheck = l.recheck || l.rounds > 0 || l.active > 0
	}
	e.mu.Unlock()
}

// Notify tells the engine that these subscriptions have new due deliveries (an ingest commit).
func (e *Engine) Notify(subscriptions []string) {
	if len(subscriptions) == 0 {
		return
	}
	e.mu.Lock()
	for _, id := range subscriptions {
		l := e.laneLocked(id)
		l.dirty, l.backlog = true, true
	}
	e.mu.Unlock()
	e.kickLoop()
}

// Stats are the engine's counts for monitoring.
type Stats struct {
	// InFlight counts HTTP attempts in flight (or about to start).
	InFlight int
	// Probing counts subscriptions held to one delivery at a time because they fail.
	Probing int
}

// Stats returns the engine's counts now.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Stats{InFlight: e.active}
	for _, l := range e.lanes {
		if l.sub != nil && l.sub.Active && l.probing() {
			st.Probing++
		}
	}
	return st
}

// Ready reports whether Run is claiming deliveries.
func (e *Engine) Ready() bool { return e.running.Load() }

func (e *Engine) kickLoop() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// laneLocked returns the lane of a subscription, making it if need be; e.mu is held.
func (e *Engine) laneLocked(id string) *lane {
	l, ok := e.lanes[id]
	if !ok {
		l = &lane{id: id}
		e.lanes[id] = l
	}
	return l
}

// Run delivers until ctx ends. Then it stops claiming, lets the rounds in flight finish for up
// to the drain period, cancels the rest (a cancelled round with no attempt is released; one
// with attempts is recorded and due again at once), records every outcome, and returns.
func (e *Engine) Run(ctx context.Context) error {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	batchCtx, stopBatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBatch()
	batched := make(chan struct{})
	go func() { e.outcomes.Run(batchCtx); close(batched) }()
	renewCtx, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRenew()
	renewed := make(chan struct{})
	go func() { e.renewLeases(renewCtx); close(renewed) }()

	e.mu.Lock()
	e.workCtx, e.refresh = workCtx, true
	e.mu.Unlock()
	e.renewMu.Lock()
	e.renewed = e.now()
	e.renewMu.Unlock()
	e.running.Store(true)
	e.loop(ctx)
	e.running.Store(false)
	e.mu.Lock()
	e.closed = true // no handoff starts a round once e.rounds is waited on
	e.mu.Unlock()
	close(e.stopped) // rounds waiting for a slot or their rate limit give up: nothing was sent

	done := make(chan struct{})
	go func() { e.rounds.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.drain):
		e.mu.Lock()
		n := len(e.held)
		e.mu.Unlock()
		e.log.Warn("shutdown: cancelling delivery rounds still in flight", "rounds", n)
		cancelWork()
		<-done
	}
	stopRenew()
	<-renewed
	stopBatch() // every round has its outcome recorded by now
	<-batched
	e.transport.CloseIdleConnections() // no keep-alive connection outlives the engine
	return nil
}

// loop claims due deliveries for the lanes that have room until ctx ends, sleeping until new
// work, a freed slot, a lane's next due time or the poll. A store that several replicas share
// (store.Notifier) wakes it too, as Wake does, when another replica may have made deliveries
// due: its ingests, retries and reactivations are delivered here without waiting for the poll.
func (e *Engine) loop(ctx context.Context) {
	var due <-chan struct{} // nil, which never delivers, unless the store is shared
	if n, ok := e.store.(store.Notifier); ok {
		due = n.Due()
	}
	var polled time.Time
	for ctx.Err() == nil {
		e.mu.Lock()
		refresh := e.refresh || time.Since(polled) >= e.poll
		e.refresh = false
		e.mu.Unlock()
		if refresh {
			e.refreshDue(ctx)
			polled = time.Now()
		}
		if e.claim(ctx) {
			continue // a lane may have more due
		}
		wait := e.poll - time.Since(polled)
		e.mu.Lock()
		now := e.now()
		for _, l := range e.lanes {
			if !l.nextDue.IsZero() {
				wait = min(wait, l.nextDue.Sub(now))
			}
		}
		e.mu.Unlock()
		if wait <= 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-e.kick:
		case <-due:
			e.markRefresh()
		case <-timer.C:
		}
		timer.Stop()
	}
}

// refreshDue asks the store which subscriptions have due deliveries, and when.
func (e *Engine) refreshDue(ctx context.Context) {
	due, err := e.store.DueSubscriptions(ctx, e.now().UTC())
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("reading due deliveries", "err", err)
		}
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for id, at := range due {
		l := e.laneLocked(id)
		switch {
		case !at.After(now):
			l.dirty, l.backlog = true, true
		case l.nextDue.IsZero() || at.Before(l.nextDue):
			l.nextDue = at
		}
	}
}

// claim leases due deliveries for every lane that may have some and has room, in one store
// call, and starts their rounds. It reports whether a lane got all it asked for (it may have
// more due).
func (e *Engine) claim(ctx context.Context) bool {
	// One reading of the clock for the renewal and the claim: a clock that moved between two
	// readings could put the claim past leases the renewal judged fresh.
	now := e.now().UTC()
	e.renewDue(ctx, now)
	gen := e.store.SubscriptionGeneration()
	var want, stale []*lane
	e.mu.Lock()
	for _, l := range e.lanes {
		if !l.nextDue.IsZero() && !now.Before(l.nextDue) {
			l.dirty, l.backlog, l.nextDue = true, true, time.Time{}
		}
		if l.dirty {
			want = append(want, l)
			if !l.loaded || l.gen != gen {
				stale = append(stale, l)
			}
		}
	}
	e.mu.Unlock()
	for _, l := range stale {
		if _, err := e.currentSubscription(ctx, l); err != nil {
			if ctx.Err() == nil {
				e.log.Error("reading a subscription", "subscription_id", l.id, "err", err)
			}
			return false
		}
	}

	var reqs []store.SubscriptionClaim
	lanes := make(map[string]*lane) // the lanes asked for, whatever happens to e.lanes meanwhile
	e.mu.Lock()
	room := e.cfg.MaxInFlight - e.active
	for _, l := range want {
		if l.sub != nil && !l.sub.Active {
			l.dirty = false // its deliveries are paused until it is reactivated
			continue
		}
		own := l.room(e.cfg.MaxInFlightPerSubscription)
		n := min(own, room)
		if n <= 0 && own > 0 && l.active == 0 && l.resuming == 0 {
			n = 1 // every subscription may always have one attempt in flight
		}
		if n <= 0 {
			continue // a freed slot kicks the loop
		}
		room -= n
		// The slots are taken now, so that resuming rounds cannot take them meanwhile.
		l.active += n
		e.active += n
		// Cleared before the store is asked, so that work a commit notifies meanwhile marks
		// the lane again; a claim that comes back full (or fails) marks it itself.
		l.dirty, l.backlog = false, false
		reqs = append(reqs, store.SubscriptionClaim{ID: l.id, Limit: n, FIFO: l.sub != nil && l.sub.Policy.Ordering == store.FIFO})
		lanes[l.id] = l
	}
	e.mu.Unlock()
	if len(reqs) == 0 {
		return false
	}

	res, err := e.store.ClaimDeliveries(ctx, store.ClaimOptions{Now: now, LeaseUntil: now.Add(e.lease), Subscriptions: reqs})
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("claiming deliveries", "err", err)
		}
		res = store.ClaimResult{}
	}
	got := make(map[string]int, len(reqs))
	more := false
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range res.Claims {
		got[c.Delivery.SubscriptionID]++
		if r, ok := e.held[c.Delivery.ID]; ok && !r.sent {
			// Its lease ran out under a round of ours (the clock moved): the round goes on
			// with the new token, and no second one starts. (A round that has sent its
			// outcome is over: the claim is the next round's.)
			r.token = c.Token
			got[c.Delivery.SubscriptionID]--
			continue
		}
		r := &round{e: e, lane: lanes[c.Delivery.SubscriptionID], claim: c, slot: true, token: c.Token}
		e.held[c.Delivery.ID] = r
		r.lane.rounds++
		e.rounds.Add(1)
		go e.runRound(r)
	}
	freed := false
	for _, rq := range reqs {
		l := lanes[rq.ID]
		unused := rq.Limit - got[rq.ID]
		l.active -= unused
		e.active -= unused
		freed = freed || unused > 0
		switch {
		case err != nil:
			l.dirty, l.backlog = true, true
		case unused > 0:
			// The store read NextDue before this claim's result came back: a round recorded
			// meanwhile may have set an earlier one.
			at, ok := res.NextDue[rq.ID]
			if ok && (l.nextDue.IsZero() || at.Before(l.nextDue)) {
				l.nextDue = at
			}
			l.capped = !ok && l.sub != nil && l.sub.Policy.MaxInFlight > 0
			if l.loaded && l.sub == nil && l.rounds == 0 && e.lanes[l.id] == l {
				delete(e.lanes, l.id) // deleted, and nothing of it left to fail
			}
		default:
			l.dirty, l.backlog = true, true
			more = true
		}
	}
	if freed {
		e.signalFreedLocked() // a quick retry may be waiting for the slots taken for nothing
	}
	return more
}

// runRound runs one claimed round and records its outcome.
func (e *Engine) runRound(r *round) {
	defer e.rounds.Done()
	defer e.finish(r)
	e.mu.Lock()
	ctx := e.workCtx
	e.mu.Unlock()
	c := r.claim
	o, ok := r.run(ctx)
	log := e.log.With("delivery_id", c.Delivery.ID, "event_id", c.Event.ID, "subscription_id", c.Delivery.SubscriptionID)
	if sc := trace.SpanContextFromContext(traceparent.With(ctx, c.Event.TraceParent)); sc.HasTraceID() {
		log = log.With("trace_id", sc.TraceID().String())
	}
	if !ok {
		e.mu.Lock()
		// From here the round's token is final: a later claim of the delivery is a new round's.
		token := r.token
		r.sent = true
		e.mu.Unlock()
		r.released = true
		err := untilStored(ctx, log, "releasing a delivery that was not attempted", func() error {
			return e.store.ReleaseDeliveries(context.WithoutCancel(ctx), []store.Lease{{DeliveryID: c.Delivery.ID, Token: token}})
		})
		if err != nil {
			log.Error("releasing a delivery that was not attempted", "err", err)
		}
		return
	}
	e.mu.Lock()
	r.recording = o // the flush takes the round's token then (see recordOutcomes)
	e.mu.Unlock()
	var stale bool
	err := untilStored(ctx, log, "recording a delivery outcome", func() (err error) {
		stale, err = e.outcomes.Do(context.WithoutCancel(ctx), o)
		return err
	})
	switch {
	case err != nil:
		// Given up at a shutdown: the lease runs out and the delivery is claimed again, at
		// least once, not lost.
		log.Error("recording a delivery outcome", "err", err)
		return
	case stale:
		log.Warn("delivery outcome not applied: the claim was taken over meanwhile; its attempts are recorded",
			"attempts", len(o.Attempts))
		return
	}
	r.outcome = o
	if e.onOutcome != nil {
		e.onOutcome(o)
	}
	if len(o.Attempts) == 0 {
		log.Info("delivery failed: its subscription was deleted")
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

// Waits between tries of a store write that must not be lost while the store fails (it cannot
// be reached, it restarts), doubled after each failure.
const (
	storeRetryMin = 50 * time.Millisecond
	storeRetryMax = 2 * time.Second
)

// untilStored calls write until it succeeds, and returns nil, or until ctx ends (a shutdown
// that has waited its drain period) or the engine's outcome batcher has stopped, and returns
// the last error. The round keeps its claim meanwhile, so its lease is renewed once the store
// answers again: an outcome that could not be recorded while the database was away is
// recorded when it is back, rather than delivered again after its lease ran out.
func untilStored(ctx context.Context, log *slog.Logger, what string, write func() error) error {
	err := write()
	for wait := storeRetryMin; err != nil && !errors.Is(err, groupcommit.ErrStopped); wait = min(2*wait, storeRetryMax) {
		if wait == storeRetryMin {
			log.Warn(what+" failed: trying again until the store takes it", "err", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		err = write()
	}
	return err
}

// takeTokens gives outcomes about to be recorded their rounds' tokens, final from now on: a
// claim that took a round's delivery over while its outcome waited for the flush (its lease had
// run out) was adopted by the round, and the outcome applies with the adopted token instead of
// being refused as stale; a later claim of the delivery is a new round's.
func (e *Engine) takeTokens(os []*store.Outcome) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range os {
		if r := e.held[o.DeliveryID]; r != nil && r.recording == o {
			o.Token = r.token
			r.sent = true
		}
	}
}

// finish forgets a round whose outcome is recorded (or whose claim is released), and has its
// lane look for more.
func (e *Engine) finish(r *round) {
	e.mu.Lock()
	e.dropSlotLocked(r)
	if e.held[r.claim.Delivery.ID] == r {
		delete(e.held, r.claim.Delivery.ID)
	}
	l := r.lane
	l.rounds--
	switch o := r.outcome; {
	case r.released:
		l.dirty, l.backlog = true, true // due again at once
	case o != nil && o.NextAttemptAt != nil:
		if l.nextDue.IsZero() || o.NextAttemptAt.Before(l.nextDue) {
			l.nextDue = *o.NextAttemptAt
		}
	}
	if l.recheck {
		l.dirty = true // a retry asked for during the round may have made it due again
		l.recheck = l.rounds > 0
	}
	if l.capped {
		l.dirty, l.capped = true, false // the round's lease has ended: room under max_in_flight
	}
	if l.loaded && l.sub == nil && l.rounds == 0 && e.lanes[l.id] == l {
		delete(e.lanes, l.id) // deleted: nothing of it is kept
		e.chains.forget(l.id)
	}
	e.signalFreedLocked()
	e.mu.Unlock()
	e.kickLoop()
}

// dropSlotLocked gives up the round's slot, if it holds one; e.mu is held.
func (e *Engine) dropSlotLocked(r *round) {
	if r.slot {
		r.slot = false
		r.lane.active--
		e.active--
	}
}

// signalFreedLocked wakes rounds waiting for a slot; e.mu is held.
func (e *Engine) signalFreedLocked() {
	close(e.freed)
	e.freed = make(chan struct{})
}

// releaseSlot gives up a round's slot: its attempt has ended. The wait before a quick retry
// holds none, so the lane may claim other deliveries meanwhile.
func (e *Engine) releaseSlot(r *round) {
	e.mu.Lock()
	e.dropSlotLocked(r)
	e.signalFreedLocked()
	e.mu.Unlock()
	e.kickLoop()
}

// acquireSlot waits until the round's lane, and the engine, have a slot for its quick retry.
// While it waits, the lane claims nothing new: a freed slot goes to the retry first. A lane
// with nothing in flight may always make one attempt, whatever the engine's total.
func (e *Engine) acquireSlot(ctx context.Context, r *round) error {
	l := r.lane
	e.mu.Lock()
	defer e.mu.Unlock()
	for waiting := false; ; {
		if l.active < l.slots(e.cfg.MaxInFlightPerSubscription) && (e.active < e.cfg.MaxInFlight || l.active == 0) {
			l.active++
			e.active++
			r.slot = true
			if waiting {
				l.resuming--
			}
			return nil
		}
		if !waiting {
			waiting = true
			l.resuming++
		}
		freed := e.freed
		e.mu.Unlock()
		select {
		case <-freed:
			e.mu.Lock()
		case <-e.stopped:
			e.mu.Lock()
			l.resuming--
			return errShuttingDown
		case <-ctx.Done():
			e.mu.Lock()
			l.resuming--
			return ctx.Err()
		}
	}
}

// noteAttempt keeps a lane's failure streak, which makes a failing subscription a probe.
func (e *Engine) noteAttempt(l *lane, ok bool) {
	e.mu.Lock()
	tripped := l.probing()
	if ok {
		l.failStreak = 0
	} else {
		l.failStreak++
	}
	if ok && tripped {
		l.dirty = true // it may take more at once again
		e.signalFreedLocked()
	}
	e.mu.Unlock()
	if ok && tripped {
		e.kickLoop()
	}
}

// currentSubscription returns a lane's subscription as it is now (nil once it is deleted),
// reading it again when the store says subscriptions changed since it was read.
func (e *Engine) currentSubscription(ctx context.Context, l *lane) (*store.Subscription, error) {
	gen := e.store.SubscriptionGeneration()
	e.mu.Lock()
	if l.loaded && l.gen == gen {
		sub := l.sub
		e.mu.Unlock()
		return sub, nil
	}
	e.mu.Unlock()
	sub, err := e.store.GetSubscription(ctx, l.id)
	if errors.Is(err, store.ErrNotFound) {
		sub, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if !l.loaded || gen >= l.gen {
		l.sub, l.gen, l.loaded = sub, gen, true
		e.signalFreedLocked() // its slots may have changed: quick retries waiting look again
	}
	sub = l.sub
	e.mu.Unlock()
	if sub == nil {
		e.chains.forget(l.id) // deleted: its plugins, and their secrets, go
		return nil, nil
	}
	l.setRate(sub.Policy.RateLimit)
	return sub, nil
}

// renewLeases extends the leases of every claimed round a third of the way through them, so
// that a long round (a slow target, an oauth2 token fetch, quick retries) is never claimed
// again underneath itself.
func (e *Engine) renewLeases(ctx context.Context) {
	tick := time.NewTicker(min(time.Second, e.lease/4))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		e.renewDue(ctx, e.now())
	}
}

// renewDue extends the leases of every claimed round, those whose outcome is on its way too,
// when the clock, read as now, has moved a third of a lease since the last renewal (or gone
// back). The claim loop calls it before every claim, with the now it claims at, so that a
// clock that jumped past the leases of rounds in flight never lets the claim take their
// deliveries again.
func (e *Engine) renewDue(ctx context.Context, now time.Time) {
	e.renewMu.Lock()
	defer e.renewMu.Unlock()
	if now.Sub(e.renewed) < e.lease/3 && !now.Before(e.renewed) {
		return
	}
	last := e.renewed
	e.renewed = now
	e.mu.Lock()
	leases := make([]store.Lease, 0, len(e.held))
	for id, r := range e.held {
		leases = append(leases, store.Lease{DeliveryID: id, Token: r.token})
	}
	e.mu.Unlock()
	if len(leases) == 0 {
		return
	}
	lost, err := e.store.ExtendLeases(ctx, leases, now.UTC().Add(e.lease))
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("renewing delivery leases", "err", err)
		}
		// Tried again at the next tick, not a third of a lease later: a short lease would
		// run out before that.
		e.renewed = last
		return
	}
	e.mu.Lock()
	lost = slices.DeleteFunc(lost, func(id string) bool {
		r := e.held[id]
		return r == nil || r.sent // finished meanwhile: its lease ended with its outcome
	})
	e.mu.Unlock()
	if len(lost) > 0 {
		e.log.Warn("delivery leases lost to another claim: those rounds' outcomes will not be applied", "deliveries", lost)
	}
}
