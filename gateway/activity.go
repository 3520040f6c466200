package gateway

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/webhookgw/gateway/store"
)

// GET /v1/stats: what the console's overview draws. The queue is read from the store at each
// request; attempts are counted in memory by this process as the engine records their
// outcomes, by minute for the last hour, so that counting costs the delivery path a lock and
// two additions, not a store write or an index on attempts.

const (
	// activityMinutes is how many minutes of counts GET /v1/stats returns, the current one last.
	activityMinutes = 60
	// subscriptionSlot is the width of a subscription's buckets. A subscription's counts are
	// those of the slots that end within the last hour: 12 whole ones and the current one.
	subscriptionSlot  = 5 * time.Minute
	subscriptionSlots = int(time.Hour/subscriptionSlot) + 1
	slotSeconds       = int64(subscriptionSlot / time.Second)
)

// minuteCount is what happened in one minute. pending < 0: the queue was not sampled in it.
type minuteCount struct {
	minute            int64 // Unix minutes; the bucket is stale when it is not the one asked for
	delivered, failed int
	pending           int
	oldestAge         float64
}

// slotCount is a subscription's attempts in one slot of subscriptionSlot.
type slotCount struct {
	slot              int64
	delivered, failed int
}

// subscriptionActivity is one subscription's attempts in the last hour, and its last attempt.
type subscriptionActivity struct {
	slots      [subscriptionSlots]slotCount
	lastAt     time.Time
	lastStatus int
	lastError  string
}

// activity counts this process's attempts by minute, and by subscription, for the last hour.
type activity struct {
	since time.Time

	mu      sync.Mutex
	minutes [activityMinutes]minuteCount
	subs    map[string]*subscriptionActivity
}

func newActivity(now time.Time) *activity {
	return &activity{since: now.UTC(), subs: make(map[string]*subscriptionActivity)}
}

// minuteAt returns the bucket of minute m, emptied first if it held an older minute; nil when
// it holds a newer one (m is more than an hour old: the clock went back, or a round took that
// long), which is then not counted.
func (a *activity) minuteAt(m int64) *minuteCount {
	b := &a.minutes[m%activityMinutes]
	switch {
	case b.minute > m:
		return nil
	case b.minute < m:
		*b = minuteCount{minute: m, pending: -1}
	}
	return b
}

// slotAt is minuteAt for a subscription's slots.
func (sub *subscriptionActivity) slotAt(slot int64) *slotCount {
	s := &sub.slots[slot%int64(subscriptionSlots)]
	switch {
	case s.slot > slot:
		return nil
	case s.slot < slot:
		*s = slotCount{slot: slot}
	}
	return s
}

// record counts an outcome's attempts: its last one succeeded when the outcome did; every
// other attempt failed. An attempt is counted in the minute it was made.
func (a *activity) record(o *store.Outcome) {
	if len(o.Attempts) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	sub := a.subs[o.SubscriptionID]
	if sub == nil {
		sub = &subscriptionActivity{}
		a.subs[o.SubscriptionID] = sub
	}
	for i, at := range o.Attempts {
		if at.At.Unix() < 0 {
			continue // not a time a clock gives
		}
		ok := o.Succeeded && i == len(o.Attempts)-1
		if b := a.minuteAt(at.At.Unix() / 60); b != nil {
			if ok {
				b.delivered++
			} else {
				b.failed++
			}
		}
		if s := sub.slotAt(at.At.Unix() / slotSeconds); s != nil {
			if ok {
				s.delivered++
			} else {
				s.failed++
			}
		}
		if !at.At.Before(sub.lastAt) {
			sub.lastAt, sub.lastStatus, sub.lastError = at.At, at.StatusCode, at.Error
		}
	}
}

// sample notes the queue as it is at now in now's minute.
func (a *activity) sample(now time.Time, st store.Stats) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if b := a.minuteAt(now.Unix() / 60); b != nil {
		b.pending, b.oldestAge = st.Pending, oldestAge(now, st)
	}
}

// oldestAge is how long the longest-due pending delivery has waited, in seconds.
func oldestAge(now time.Time, st store.Stats) float64 {
	if st.OldestDue.IsZero() {
		return 0
	}
	return max(now.Sub(st.OldestDue).Seconds(), 0)
}

// statsView is the body of GET /v1/stats.
type statsView struct {
	At                   string                     `json:"at"`
	CountingSince        string                     `json:"countingSince"`
	Queue                queueView                  `json:"queue"`
	Subscriptions        subscriptionCountsView     `json:"subscriptions"`
	Minutes              []minuteView               `json:"minutes"`
	SubscriptionActivity []subscriptionActivityView `json:"subscriptionActivity"`
}

type queueView struct {
	Pending                 int     `json:"pending"`
	OldestPendingAgeSeconds float64 `json:"oldestPendingAgeSeconds"`
}

type subscriptionCountsView struct {
	Active       int `json:"active"`
	InErrorState int `json:"inErrorState"`
	Inactive     int `json:"inactive"`
}

// minuteView is one minute: attempts that succeeded and failed in it, and the queue as last
// sampled in it (null when it was not).
type minuteView struct {
	Start                   string   `json:"start"`
	Delivered               int      `json:"delivered"`
	Failed                  int      `json:"failed"`
	Pending                 *int     `json:"pending"`
	OldestPendingAgeSeconds *float64 `json:"oldestPendingAgeSeconds"`
}

// subscriptionActivityView is one subscription's attempts in the last hour.
type subscriptionActivityView struct {
	SubscriptionID string  `json:"subscriptionId"`
	Delivered      int     `json:"delivered"`
	Failed         int     `json:"failed"`
	LastAttemptAt  string  `json:"lastAttemptAt"`
	LastStatusCode *int    `json:"lastStatusCode"`
	LastError      *string `json:"lastError"`
}

// subscriptionCopy is a subscription's activity copied out of the lock.
type subscriptionCopy struct {
	id                string
	delivered, failed int
	lastAt            time.Time
	lastStatus        int
	lastError         string
}

// snapshot returns the last hour's minutes up to now's, oldest first, and the subscriptions
// that made attempts in the last hour, by id. It copies under the lock and formats after, so
// that the delivery path waits only for the copy.
func (a *activity) snapshot(now time.Time) ([]minuteView, []subscriptionActivityView) {
	last := now.Unix() / 60
	var buckets [activityMinutes]minuteCount
	a.mu.Lock()
	for i := range buckets {
		m := last - activityMinutes + 1 + int64(i)
		if b := a.minutes[((m%activityMinutes)+activityMinutes)%activityMinutes]; b.minute == m {
			buckets[i] = b
		} else {
			buckets[i] = minuteCount{minute: m, pending: -1}
		}
	}
	subs := a.recentLocked(now, nil)
	a.mu.Unlock()

	minutes := make([]minuteView, activityMinutes)
	for i, b := range buckets {
		v := minuteView{Start: time.Unix(b.minute*60, 0).UTC().Format(rfc3339Milli), Delivered: b.delivered, Failed: b.failed}
		if b.pending >= 0 {
			pending, age := b.pending, b.oldestAge
			v.Pending, v.OldestPendingAgeSeconds = &pending, &age
		}
		minutes[i] = v
	}
	views := make([]subscriptionActivityView, 0, len(subs))
	for _, c := range subs {
		v := subscriptionActivityView{SubscriptionID: c.id, Delivered: c.delivered, Failed: c.failed,
			LastAttemptAt: c.lastAt.UTC().Format(rfc3339Milli), LastError: optionalString(c.lastError)}
		if c.lastStatus != 0 {
			status := c.lastStatus
			v.LastStatusCode = &status
		}
		views = append(views, v)
	}
	slices.SortFunc(views, func(x, y subscriptionActivityView) int { return cmp.Compare(x.SubscriptionID, y.SubscriptionID) })
	return minutes, views
}

// recentLocked appends to out the subscriptions with attempts in the slots that end within the
// hour before now, and forgets those whose last attempt is older than that. a.mu is held.
func (a *activity) recentLocked(now time.Time, out []subscriptionCopy) []subscriptionCopy {
	first := (now.Unix() - 3600) / slotSeconds // the oldest slot that ends after now-1h
	last := now.Unix() / slotSeconds
	for id, sub := range a.subs {
		c := subscriptionCopy{id: id, lastAt: sub.lastAt, lastStatus: sub.lastStatus, lastError: sub.lastError}
		for _, s := range sub.slots {
			if s.slot >= first && s.slot <= last {
				c.delivered += s.delivered
				c.failed += s.failed
			}
		}
		if c.delivered+c.failed == 0 {
			if now.Sub(sub.lastAt) > time.Hour {
				delete(a.subs, id)
			}
			continue
		}
		out = append(out, c)
	}
	return out
}

// forget drops the subscriptions with no attempt in the last hour, so that the map does not
// keep every subscription ever attempted when nobody asks for the statistics.
func (a *activity) forget(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recentLocked(now, nil)
}

// getStats answers GET /v1/stats: the queue and the subscriptions' states from the store, and
// this process's attempts in the last hour.
func (g *Gateway) getStats(c *fiber.Ctx) error {
	now := g.now().UTC()
	st, err := g.store.Stats(c.UserContext(), now)
	if err != nil {
		return err
	}
	g.activity.sample(now, st)
	minutes, subs := g.activity.snapshot(now)
	return c.JSON(statsView{
		At:                   now.Format(rfc3339Milli),
		CountingSince:        g.activity.since.Format(rfc3339Milli),
		Queue:                queueView{Pending: st.Pending, OldestPendingAgeSeconds: oldestAge(now, st)},
		Subscriptions:        subscriptionCountsView{Active: st.Active, InErrorState: st.InErrorState, Inactive: st.Inactive},
		Minutes:              minutes,
		SubscriptionActivity: subs,
	})
}

// sampleQueue samples the queue once a minute until ctx ends, so that the overview's queue
// chart has a point for every minute, not only those in which someone looked.
func (g *Gateway) sampleQueue(ctx context.Context) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := g.now().UTC()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := g.store.Stats(sctx, now)
		cancel()
		if err == nil {
			g.activity.sample(now, st)
		}
		g.activity.forget(now)
	}
}
