package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

var t0 = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

// at returns a pointer to t0 plus d.
func at(d time.Duration) *time.Time {
	t := t0.Add(d)
	return &t
}

// health is what ApplyOutcome and Reactivate may change, with times as offsets from t0.
func health(sub *store.Subscription) string {
	rel := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Sub(t0).String()
	}
	return fmt.Sprintf("active=%t deactivated=%s error=%t reason=%q detected=%s failures=%d", sub.Active,
		rel(sub.DeactivatedAt), sub.InErrorState, sub.ErrorStateReason, rel(sub.DetectedErrorStateAt), sub.ConsecutiveFailures)
}

// sub is an active, healthy subscription changed by change.
func sub(change func(*store.Subscription)) *store.Subscription {
	s := &store.Subscription{ID: "a", URL: "https://example.com/hooks", Events: []string{"x"}, Active: true,
		CreatedAt: t0, UpdatedAt: t0}
	if change != nil {
		change(s)
	}
	return s
}

// failing is in error state since t0 after failures failed attempts.
func failing(failures int) func(*store.Subscription) {
	return func(s *store.Subscription) {
		s.InErrorState, s.ErrorStateReason, s.DetectedErrorStateAt, s.ConsecutiveFailures = true, "HTTP 500 from target", at(0), failures
	}
}

func attempts(codes ...int) []store.Attempt {
	as := make([]store.Attempt, len(codes))
	for i, code := range codes {
		as[i] = store.Attempt{At: t0, StatusCode: code}
	}
	return as
}

func failed(reason string, codes ...int) *store.Outcome {
	return &store.Outcome{DeliveryID: "d", SubscriptionID: "a", Attempts: attempts(codes...), Reason: reason}
}

func TestApplyOutcome(t *testing.T) {
	policy := store.ErrorPolicy{ErrorStateAfter: 3, DisableAfter: 24 * time.Hour}
	succeeded := &store.Outcome{DeliveryID: "d", SubscriptionID: "a", Attempts: attempts(500, 200), Succeeded: true}
	gone := failed("HTTP 410 from target", 410)
	gone.Gone = true
	inactive := func(s *store.Subscription) { s.Active, s.DeactivatedAt = false, at(-time.Hour) }

	tests := []struct {
		name    string
		sub     *store.Subscription
		outcome *store.Outcome
		now     time.Duration // after t0
		want    string
		changed bool
	}{
		{"success clears the error state", sub(failing(7)), succeeded, time.Hour,
			`active=true deactivated=- error=false reason="" detected=- failures=0`, true},
		{"success resets failures below the threshold", sub(func(s *store.Subscription) { s.ConsecutiveFailures = 2 }), succeeded, 0,
			`active=true deactivated=- error=false reason="" detected=- failures=0`, true},
		{"success on a healthy subscription changes nothing", sub(nil), succeeded, 0,
			`active=true deactivated=- error=false reason="" detected=- failures=0`, false},
		{"success does not reactivate", sub(inactive), succeeded, 0,
			`active=false deactivated=-1h0m0s error=false reason="" detected=- failures=0`, false},
		{"each failed attempt counts", sub(nil), failed("connection refused", 500, 0), time.Minute,
			`active=true deactivated=- error=false reason="" detected=- failures=2`, true},
		{"the ErrorStateAfter-th failure enters error state", sub(func(s *store.Subscription) { s.ConsecutiveFailures = 2 }),
			failed("HTTP 503 from target", 503), time.Minute,
			`active=true deactivated=- error=true reason="HTTP 503 from target" detected=1m0s failures=3`, true},
		{"quick retries can cross the threshold in one outcome", sub(func(s *store.Subscription) { s.ConsecutiveFailures = 1 }),
			failed("HTTP 500 from target", 500, 500, 500), time.Minute,
			`active=true deactivated=- error=true reason="HTTP 500 from target" detected=1m0s failures=4`, true},
		{"in error state a new reason replaces the old, detection kept", sub(failing(3)), failed("timeout", 0), time.Hour,
			`active=true deactivated=- error=true reason="timeout" detected=0s failures=4`, true},
		{"in error state an empty reason keeps the old", sub(failing(3)), failed("", 0), time.Hour,
			`active=true deactivated=- error=true reason="HTTP 500 from target" detected=0s failures=4`, true},
		{"still failing just before DisableAfter stays active", sub(failing(3)), failed("HTTP 500 from target", 500),
			24*time.Hour - time.Millisecond,
			`active=true deactivated=- error=true reason="HTTP 500 from target" detected=0s failures=4`, true},
		{"still failing DisableAfter later deactivates", sub(failing(3)), failed("HTTP 502 from target", 502), 24 * time.Hour,
			`active=false deactivated=24h0m0s error=true reason="HTTP 502 from target" detected=0s failures=4`, true},
		{"a 410 deactivates at once", sub(nil), gone, time.Minute,
			`active=false deactivated=1m0s error=false reason="" detected=- failures=1`, true},
		{"a 410 keeps an earlier deactivation", sub(inactive), gone, time.Minute,
			`active=false deactivated=-1h0m0s error=false reason="" detected=- failures=1`, true},
		{"a failure without failed attempts changes nothing", sub(nil), failed("HTTP 500 from target"), time.Minute,
			`active=true deactivated=- error=false reason="" detected=- failures=0`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := *tt.sub
			changed := store.ApplyOutcome(tt.sub, tt.outcome, policy, t0.Add(tt.now))
			if got := health(tt.sub); got != tt.want {
				t.Errorf("\n got: %s\nwant: %s", got, tt.want)
			}
			if changed != tt.changed {
				t.Errorf("changed = %t, want %t", changed, tt.changed)
			}
			if tt.sub.ID != before.ID || tt.sub.URL != before.URL || !tt.sub.UpdatedAt.Equal(before.UpdatedAt) {
				t.Errorf("changed more than the state: %+v", tt.sub)
			}
		})
	}
}

func TestReactivate(t *testing.T) {
	clean := `active=true deactivated=- error=false reason="" detected=- failures=0`
	tests := []struct {
		name string
		sub  *store.Subscription
	}{
		{"deactivated in error state", sub(func(s *store.Subscription) {
			failing(9)(s)
			s.Active, s.DeactivatedAt = false, at(24*time.Hour)
		})},
		{"deactivated by a 410", sub(func(s *store.Subscription) {
			s.Active, s.DeactivatedAt, s.ConsecutiveFailures = false, at(time.Minute), 1
		})},
		{"active in error state", sub(failing(3))},
		{"healthy", sub(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := *tt.sub
			store.Reactivate(tt.sub)
			if got := health(tt.sub); got != clean {
				t.Errorf("\n got: %s\nwant: %s", got, clean)
			}
			if tt.sub.ID != before.ID || tt.sub.URL != before.URL || !tt.sub.UpdatedAt.Equal(before.UpdatedAt) {
				t.Errorf("changed more than the state: %+v", tt.sub)
			}
		})
	}
}
