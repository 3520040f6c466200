package gateway

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

var activityStart = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// outcome is a round of attempts at the given times for sub; the last succeeds when ok.
func outcome(sub string, ok bool, at ...time.Time) *store.Outcome {
	o := &store.Outcome{SubscriptionID: sub, Succeeded: ok}
	for i, t := range at {
		status := 500
		if ok && i == len(at)-1 {
			status = 200
		}
		o.Attempts = append(o.Attempts, store.Attempt{At: t, StatusCode: status})
	}
	return o
}

// An attempt from more than an hour before the newest one (a clock that went back, a round
// that took that long) is dropped: it must not wipe the newer minute that shares its bucket.
func TestActivityKeepsNewerCountsFromOlderAttempts(t *testing.T) {
	a := newActivity(activityStart)
	a.record(outcome("s", true, activityStart))
	a.record(outcome("s", false, activityStart.Add(-time.Hour)))
	a.record(outcome("s", false, activityStart.Add(-65*time.Minute)))
	a.sample(activityStart.Add(-time.Hour), store.Stats{Pending: 7})

	minutes, subs := a.snapshot(activityStart)
	now := minutes[len(minutes)-1]
	if now.Delivered != 1 || now.Failed != 0 {
		t.Errorf("the current minute: %+v, want the one success", now)
	}
	// A subscription counts in five-minute steps, those that end within the hour: the attempt
	// an hour back is in it; the one 65 minutes back shares the current step's bucket.
	if len(subs) != 1 || subs[0].Delivered != 1 || subs[0].Failed != 1 {
		t.Errorf("the subscription: %+v, want the success and the failure an hour back", subs)
	}
	if subs[0].LastAttemptAt != "2026-03-04T05:06:07.000Z" || *subs[0].LastStatusCode != 200 {
		t.Errorf("the last attempt went back in time: %+v", subs[0])
	}
	// Within the hour, an older attempt is counted in its own minute.
	a.record(outcome("s", false, activityStart.Add(-59*time.Minute)))
	minutes, _ = a.snapshot(activityStart)
	if m := minutes[0]; m.Failed != 1 {
		t.Errorf("59 minutes back: %+v", m)
	}
}

// Quick retries before a success count as failed attempts, each in its own minute.
func TestActivityCountsEveryAttempt(t *testing.T) {
	a := newActivity(activityStart)
	a.record(outcome("s", true, activityStart.Add(-90*time.Second), activityStart.Add(-30*time.Second), activityStart))
	a.record(outcome("t", false, activityStart))
	a.record(&store.Outcome{SubscriptionID: "deleted", SubscriptionDeleted: true}) // no attempt: nothing
	minutes, subs := a.snapshot(activityStart)
	for _, m := range minutes[57:59] {
		if m.Delivered != 0 || m.Failed != 1 {
			t.Errorf("a quick retry's minute: %+v", m)
		}
	}
	if m := minutes[59]; m.Delivered != 1 || m.Failed != 1 {
		t.Errorf("now: %+v", m)
	}
	if len(subs) != 2 || subs[0].SubscriptionID != "s" || subs[0].Delivered != 1 || subs[0].Failed != 2 ||
		subs[1].SubscriptionID != "t" || subs[1].Failed != 1 {
		t.Errorf("by subscription: %+v", subs)
	}
}

// The map of subscriptions forgets those idle for an hour even if nobody reads it.
func TestActivityForgetsIdleSubscriptions(t *testing.T) {
	a := newActivity(activityStart)
	for _, id := range []string{"a", "b", "c"} {
		a.record(outcome(id, true, activityStart))
	}
	a.record(outcome("b", true, activityStart.Add(50*time.Minute)))
	a.forget(activityStart.Add(66 * time.Minute))
	if len(a.subs) != 1 || a.subs["b"] == nil {
		t.Errorf("after an hour, kept %d subscriptions, want only b", len(a.subs))
	}
}

// The engine records outcomes from many goroutines while the API reads and samples; what a
// snapshot returns is its own (the race detector checks), and never a negative count.
func TestActivityConcurrentUse(t *testing.T) {
	a := newActivity(activityStart)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				at := activityStart.Add(time.Duration(i) * time.Second)
				a.record(outcome(string(rune('a'+w)), i%2 == 0, at))
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for i := range 200 {
				now := activityStart.Add(time.Duration(i*3) * time.Second)
				a.sample(now, store.Stats{Pending: i})
				minutes, subs := a.snapshot(now)
				b, err := json.Marshal(struct {
					M []minuteView
					S []subscriptionActivityView
				}{minutes, subs})
				if err != nil {
					t.Error(err)
					return
				}
				_ = b
				for _, m := range minutes {
					if m.Pending != nil && *m.Pending < 0 {
						t.Errorf("minute %s: pending %d", m.Start, *m.Pending)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	minutes, subs := a.snapshot(activityStart.Add(500 * time.Second))
	total := 0
	for _, m := range minutes {
		total += m.Delivered + m.Failed
	}
	if total != 2000 || len(subs) != 4 {
		t.Errorf("counted %d attempts of %d subscriptions, want 2000 of 4", total, len(subs))
	}
}
