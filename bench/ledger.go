package bench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// ledger is the run's bookkeeping: which events the gateway accepted, and which of them each
// healthy subscription received, when, and how often. Events are numbered from 0 in the order
// they are sent. An event may be received before its 202 is read; the ledger matches the two
// whichever comes first.
type ledger struct {
	mu       sync.Mutex
	accepted []bool
	nAcc     int64
	subs     []*subLedger
}

// subLedger is what one subscription received.
type subLedger struct {
	seen    []uint8 // receipts by event number, saturating at 255
	unique  int64   // events received at least once
	matched int64   // accepted events received at least once
	dups    int64   // receipts after the first
	foreign int64   // bodies that were not this run's events
	latency []time.Duration
	last    time.Duration // the latest first receipt, on the run's clock
}

func newLedger(subs int) *ledger {
	l := &ledger{subs: make([]*subLedger, subs)}
	for i := range l.subs {
		l.subs[i] = &subLedger{}
	}
	return l
}

// grow returns s with room for index n.
func grow[T any](s []T, n int64) []T {
	if n < int64(len(s)) {
		return s
	}
	return append(s, make([]T, max(int64(len(s)), n+1-int64(len(s)), 1024))...)
}

// accept records that the gateway accepted events first to first+n-1.
func (l *ledger) accept(first, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accepted = grow(l.accepted, first+n-1)
	for e := first; e < first+n; e++ {
		if l.accepted[e] {
			continue
		}
		l.accepted[e] = true
		l.nAcc++
		for _, s := range l.subs {
			if e < int64(len(s.seen)) && s.seen[e] > 0 {
				s.matched++
			}
		}
	}
}

// receive records that subscription sub received event e, sent at sent and received at at,
// both on the run's clock.
func (l *ledger) receive(sub int, e int64, sent, at time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.subs[sub]
	s.seen = grow(s.seen, e)
	switch s.seen[e] {
	case 0:
		s.unique++
		if e < int64(len(l.accepted)) && l.accepted[e] {
			s.matched++
		}
		s.latency = append(s.latency, at-sent)
		s.last = max(s.last, at)
	default:
		s.dups++
	}
	if s.seen[e] < 255 {
		s.seen[e]++
	}
}

// foreign records a body on subscription sub that was not one of this run's events.
func (l *ledger) foreign(sub int) {
	l.mu.Lock()
	l.subs[sub].foreign++
	l.mu.Unlock()
}

// progress returns the events accepted so far and the first receipts over all subscriptions.
func (l *ledger) progress() (accepted, received int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.subs {
		received += s.unique
	}
	return l.nAcc, received
}

// complete reports whether every accepted event has reached every subscription.
func (l *ledger) complete() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.subs {
		if s.matched < l.nAcc {
			return false
		}
	}
	return true
}

// tally is the ledger's summary over all its subscriptions.
type tally struct {
	accepted   int64
	deliveries int64 // first receipts over all subscriptions
	lost       int64 // accepted events some subscription never received, counted per subscription
	duplicates int64
	foreign    int64
	last       time.Duration
	latency    []time.Duration // sorted
}

func (l *ledger) tally() tally {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := tally{accepted: l.nAcc}
	for _, s := range l.subs {
		t.deliveries += s.unique
		t.lost += l.nAcc - s.matched
		t.duplicates += s.dups
		t.foreign += s.foreign
		t.last = max(t.last, s.last)
		t.latency = append(t.latency, s.latency...)
	}
	slices.Sort(t.latency)
	return t
}

// percentile returns the nearest-rank q-quantile of sorted, or 0 when it is empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
