package delivery

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"30", 30 * time.Second, true},
		{"0", 0, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"99999999999", 7 * 24 * time.Hour, true}, // capped at a week
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true}, // a date in the past: now
	} {
		got, ok := retryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestScheduleNext(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	s := schedule{waits: []time.Duration{5 * time.Second, time.Minute}, now: func() time.Time { return now }}
	for _, c := range []struct {
		step       int
		retryAfter time.Duration
		want       time.Duration
	}{
		{0, 0, 5 * time.Second},
		{1, 0, time.Minute},
		{0, 8 * time.Second, 8 * time.Second}, // Retry-After honoured
		{0, time.Hour, 10 * time.Second},      // up to twice the scheduled wait
		{1, 30 * time.Second, time.Minute},    // never shorter than the schedule
	} {
		got := s.next(c.step, c.retryAfter)
		if got == nil || got.Sub(now) != c.want {
			t.Errorf("next(%d, %s) = %v, want now+%s", c.step, c.retryAfter, got, c.want)
		}
	}
	if got := s.next(2, 0); got != nil {
		t.Errorf("past the schedule: %v, want nil", got)
	}
	s.jitter = 0.2
	for range 100 {
		if w := s.next(1, 0).Sub(now); w < 48*time.Second || w > 72*time.Second {
			t.Fatalf("jittered wait %s outside ±20%% of 1m", w)
		}
	}
}

func TestQuickBackoffDoubles(t *testing.T) {
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		if got := quickBackoff(time.Second, 8*time.Second, n, nil); got != want {
			t.Errorf("wait %d: %s, want %s", n, got, want)
		}
	}
}
