package gateway_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
)

// stats is GET /v1/stats, decoded.
type stats struct {
	At            string `json:"at"`
	CountingSince string `json:"countingSince"`
	Queue         struct {
		Pending                 int     `json:"pending"`
		OldestPendingAgeSeconds float64 `json:"oldestPendingAgeSeconds"`
	} `json:"queue"`
	Subscriptions struct {
		Active, InErrorState, Inactive int
	} `json:"subscriptions"`
	Minutes []struct {
		Start                   string   `json:"start"`
		Delivered               int      `json:"delivered"`
		Failed                  int      `json:"failed"`
		Pending                 *int     `json:"pending"`
		OldestPendingAgeSeconds *float64 `json:"oldestPendingAgeSeconds"`
	} `json:"minutes"`
	SubscriptionActivity []struct {
		SubscriptionID string  `json:"subscriptionId"`
		Delivered      int     `json:"delivered"`
		Failed         int     `json:"failed"`
		LastAttemptAt  string  `json:"lastAttemptAt"`
		LastStatusCode *int    `json:"lastStatusCode"`
		LastError      *string `json:"lastError"`
	} `json:"subscriptionActivity"`
}

func (e *env) stats(t *testing.T) stats {
	t.Helper()
	r := e.do("GET", "/v1/stats", nil)
	expect(t, r, http.StatusOK)
	var s stats
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("GET /v1/stats: %v", err)
	}
	return s
}

func TestStatsCountAttemptsByMinuteAndSubscription(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 1
		c.Delivery.Schedule = []time.Duration{2 * time.Hour} // not due again within the test
	})
	ok := newReceiver(t, nil)
	// Fails the first attempt (its quick retry succeeds), then every attempt from the third.
	flaky := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 || n > 2 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	okID := e.subscribe(t, ok.URL, "")
	flakyID := e.subscribe(t, flaky.URL, "")

	s := e.stats(t)
	if len(s.Minutes) != 60 || s.Minutes[59].Start != "2026-03-04T05:06:00.000Z" || s.Minutes[0].Start != "2026-03-04T04:07:00.000Z" {
		t.Fatalf("minutes: %d, from %s to %s", len(s.Minutes), s.Minutes[0].Start, s.Minutes[len(s.Minutes)-1].Start)
	}
	if len(s.SubscriptionActivity) != 0 || s.Minutes[59].Delivered+s.Minutes[59].Failed != 0 {
		t.Fatalf("activity before any attempt: %+v", s)
	}
	if p := s.Minutes[59].Pending; p == nil || *p != 0 || s.Minutes[58].Pending != nil {
		t.Errorf("the queue is sampled in the current minute only: %v, %v", s.Minutes[59].Pending, s.Minutes[58].Pending)
	}
	if s.CountingSince != "2026-03-04T05:06:07.891Z" || s.At != "2026-03-04T05:06:07.891Z" {
		t.Errorf("countingSince %s, at %s", s.CountingSince, s.At)
	}

	expect(t, e.post(t, `{"id": "s-1", "type": "transaction.state.updated"}`), http.StatusAccepted)
	eventually(t, "s-1 delivered to both", func() bool { return ok.count() == 1 && flaky.count() == 2 })
	expect(t, e.post(t, `{"id": "s-2", "type": "transaction.state.updated"}`), http.StatusAccepted)
	eventually(t, "s-2 delivered to ok, failed twice at flaky", func() bool { return ok.count() == 2 && flaky.count() == 4 })
	eventually(t, "the outcomes are recorded", func() bool {
		s = e.stats(t)
		return s.Minutes[59].Delivered == 3 && s.Minutes[59].Failed == 3
	})
	if s.Queue.Pending != 1 || s.Subscriptions.Active != 2 {
		t.Errorf("queue %+v, subscriptions %+v: want the retry of s-2 pending, two active; %s", s.Queue, s.Subscriptions, e.do("GET", "/v1/deliveries", nil).body)
	}
	if len(s.SubscriptionActivity) != 2 {
		t.Fatalf("activity of %d subscriptions, want 2: %+v", len(s.SubscriptionActivity), s.SubscriptionActivity)
	}
	status := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	for _, a := range s.SubscriptionActivity {
		switch a.SubscriptionID {
		case okID:
			if a.Delivered != 2 || a.Failed != 0 || status(a.LastStatusCode) != 200 || a.LastError != nil ||
				a.LastAttemptAt != "2026-03-04T05:06:07.891Z" {
				t.Errorf("ok's activity: %+v", a)
			}
		case flakyID:
			if a.Delivered != 1 || a.Failed != 3 || status(a.LastStatusCode) != 500 {
				t.Errorf("flaky's activity: %+v", a)
			}
		default:
			t.Errorf("activity of an unknown subscription: %+v", a)
		}
	}

	// Two minutes on, the counts are two minutes back; an hour on they are gone, and so are
	// the subscriptions.
	e.clock.Set(start.Add(2 * time.Minute))
	s = e.stats(t)
	if m := s.Minutes[57]; m.Delivered != 3 || m.Failed != 3 || s.Minutes[59].Delivered+s.Minutes[59].Failed != 0 {
		t.Errorf("two minutes on: %+v, now %+v", m, s.Minutes[59])
	}
	if p := s.Minutes[57].Pending; p == nil || *p != 1 {
		t.Errorf("the sample of the first minute: %v", p)
	}
	e.clock.Set(start.Add(61 * time.Minute))
	s = e.stats(t)
	for _, m := range s.Minutes {
		if m.Delivered+m.Failed != 0 {
			t.Errorf("an hour on, %s still counts %d and %d", m.Start, m.Delivered, m.Failed)
		}
	}
	// A subscription's counts are in five-minute steps: those that end within the hour.
	if len(s.SubscriptionActivity) != 2 {
		t.Errorf("61 minutes on, the five minutes from 05:05 still count: %+v", s.SubscriptionActivity)
	}
	e.clock.Set(start.Add(66 * time.Minute))
	if s = e.stats(t); len(s.SubscriptionActivity) != 0 {
		t.Errorf("66 minutes on, activity is still listed: %+v", s.SubscriptionActivity)
	}
}

func TestStatsNeedAnAdminToken(t *testing.T) {
	e := newEnv(t, nil)
	expectProblem(t, e.doAs("", "GET", "/v1/stats", nil), http.StatusUnauthorized)
	expectProblem(t, e.doAs("wrong", "GET", "/v1/stats", nil), http.StatusUnauthorized)
}
