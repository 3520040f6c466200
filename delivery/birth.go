package delivery

import (
	"context"

	"github.com/webhookgw/gateway/store"
)

// BeginIngest returns the options for one ingest transaction, which lease at birth the
// deliveries the engine can start at once, and end, to be called with the transaction's
// results or error. On success end starts the leased deliveries' rounds (no claim
// transaction: the committed rows are the durable record, and a crash leaves them to
// RecoverLeases) and wakes the lanes whose deliveries were stored unleased; on failure it
// gives back the slots reserved. Each try of a transaction needs its own BeginIngest.
//
// A delivery is leased at birth only when its lane is known to be active and unchanged,
// delivers in any order at any rate, is not probing a failing target, has no older due
// deliveries waiting in the store that the engine knows of (one due meanwhile, found at the next
// claim or poll, may be passed: unordered lanes promise no order), and holds fewer rounds than roundsPerSlot a slot (and the
// engine fewer than roundsPerSlot times delivery.max_in_flight): everything else takes the
// claim's path, which honours order, rates and probes. A round born while its lane's slots are
// all taken waits for one in memory, as a quick retry does, its lease renewed meanwhile.
func (e *Engine) BeginIngest(newID func() string) (opts store.IngestOptions, end func([]store.IngestResult, error)) {
	var reserved []birth // in the order the store asks, which its claims follow
	opts = store.IngestOptions{
		NewID:      newID,
		LeaseUntil: e.now().UTC().Add(e.lease),
		Lease: func(subscriptionID string) bool {
			b, ok := e.reserve(subscriptionID)
			if ok {
				reserved = append(reserved, b)
			}
			return ok
		},
	}
	end = func(results []store.IngestResult, err error) {
		if err != nil {
			e.unreserve(reserved)
			return
		}
		var claims []*store.Claim
		var unleased []string
		for _, r := range results {
			claims = append(claims, r.Claims...)
			if len(r.Claims) == len(r.Targets) {
				continue
			}
			leased := make(map[string]bool, len(r.Claims))
			for _, c := range r.Claims {
				leased[c.Delivery.SubscriptionID] = true
			}
			for _, id := range r.Targets {
				if !leased[id] {
					unleased = append(unleased, id)
				}
			}
		}
		e.handoff(claims, reserved)
		e.Notify(unleased)
	}
	return opts, end
}

// birth is a round reserved for a delivery leased at birth: its lane, and whether it took a
// slot (or waits for one).
type birth struct {
	lane *lane
	slot bool
}

// reserve counts a round in a subscription's lane for a delivery about to be stored, and takes
// it a slot if one is free, when the lane may take the delivery at birth (see BeginIngest).
func (e *Engine) reserve(subscriptionID string) (birth, bool) {
	gen := e.store.SubscriptionGeneration()
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.lanes[subscriptionID]
	switch {
	case e.closed || l == nil || !l.loaded || l.gen != gen || l.backlog:
		return birth{}, false
	case l.sub == nil || !l.sub.Active || l.sub.Policy.Ordering == store.FIFO || l.sub.Policy.RateLimit > 0 || l.probing():
		return birth{}, false
	case e.births+len(e.held) >= roundsPerSlot*e.cfg.MaxInFlight:
		return birth{}, false
	}
	slots := l.slots(e.cfg.MaxInFlightPerSubscription)
	if l.rounds >= roundsPerSlot*slots {
		return birth{}, false
	}
	l.rounds++
	e.births++
	b := birth{lane: l}
	if l.active < slots && l.resuming == 0 && (e.active < e.cfg.MaxInFlight || l.active == 0) {
		l.active++
		e.active++
		b.slot = true
	}
	return b, true
}

// unreserve gives back what reserve took for deliveries that were not stored.
func (e *Engine) unreserve(births []birth) {
	if len(births) == 0 {
		return
	}
	e.mu.Lock()
	for _, b := range births {
		e.undoBirthLocked(b)
	}
	e.signalFreedLocked()
	e.mu.Unlock()
	e.kickLoop()
}

// undoBirthLocked gives back a reserved round; e.mu is held.
func (e *Engine) undoBirthLocked(b birth) {
	b.lane.rounds--
	e.births--
	if b.slot {
		b.lane.active--
		e.active--
	}
}

// handoff starts the rounds of deliveries leased at birth, which births reserved, one for
// each, in order. Once the engine has stopped it releases them instead, for the next run to
// claim.
func (e *Engine) handoff(claims []*store.Claim, births []birth) {
	if len(claims) != len(births) { // a backend that asked and then did not lease
		e.log.Error("deliveries leased at birth do not match the reservations", "claims", len(claims), "reserved", len(births))
	}
	if len(births) == 0 {
		return
	}
	e.mu.Lock()
	if e.closed {
		for _, b := range births {
			e.undoBirthLocked(b)
		}
		e.mu.Unlock()
		leases := make([]store.Lease, len(claims))
		for i, c := range claims {
			leases[i] = store.Lease{DeliveryID: c.Delivery.ID, Token: c.Token}
		}
		if err := e.store.ReleaseDeliveries(context.Background(), leases); err != nil {
			e.log.Error("releasing deliveries stored during the shutdown", "err", err)
		}
		return
	}
	for i, b := range births {
		if i >= len(claims) {
			e.undoBirthLocked(b)
			continue
		}
		c := claims[i]
		if _, ok := e.held[c.Delivery.ID]; ok {
			// A claim took it over before it came here (its birth lease ran out: the clock
			// jumped): that claim's round runs it.
			e.undoBirthLocked(b)
			continue
		}
		e.births--
		r := &round{e: e, lane: b.lane, claim: c, slot: b.slot, token: c.Token}
		e.held[c.Delivery.ID] = r
		e.rounds.Add(1)
		go e.runRound(r)
	}
	e.signalFreedLocked()
	e.mu.Unlock()
	e.kickLoop()
}
