package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/sqlite"
)

// hooked is a store whose ClaimDeliveries and IngestEvents can run a hook after the store
// call has committed, before the engine sees the result.
type hooked struct {
	store.Store
	mu          sync.Mutex
	afterClaim  func(store.ClaimResult)
	afterIngest func([]store.IngestResult)
	// beforeComplete, if set, runs before CompleteDeliveries.
	beforeComplete func()
}

func (h *hooked) CompleteDeliveries(ctx context.Context, os []*store.Outcome, p store.ErrorPolicy, now time.Time) ([]string, error) {
	h.mu.Lock()
	f := h.beforeComplete
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return h.Store.CompleteDeliveries(ctx, os, p, now)
}

func (h *hooked) ClaimDeliveries(ctx context.Context, o store.ClaimOptions) (store.ClaimResult, error) {
	res, err := h.Store.ClaimDeliveries(ctx, o)
	h.mu.Lock()
	f := h.afterClaim
	h.mu.Unlock()
	if f != nil && err == nil {
		f(res)
	}
	return res, err
}

func (h *hooked) IngestEvents(ctx context.Context, evs []*store.Event, o store.IngestOptions) ([]store.IngestResult, error) {
	res, err := h.Store.IngestEvents(ctx, evs, o)
	h.mu.Lock()
	f := h.afterIngest
	h.mu.Unlock()
	if f != nil && err == nil {
		f(res)
	}
	return res, err
}

func (h *hooked) set(claim func(store.ClaimResult), ingest func([]store.IngestResult)) {
	h.mu.Lock()
	h.afterClaim, h.afterIngest = claim, ingest
	h.mu.Unlock()
}

type probeClock struct {
	mu   sync.Mutex
	off  time.Duration
	step time.Duration // added to off at every reading
}

func (c *probeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += c.step
	return time.Now().Add(c.off)
}
func (c *probeClock) stepEach(d time.Duration) { c.mu.Lock(); c.step = d; c.mu.Unlock() }
func (c *probeClock) jump(d time.Duration)     { c.mu.Lock(); c.off += d; c.mu.Unlock() }

type probe struct {
	t     *testing.T
	s     *hooked
	e     *Engine
	clk   *probeClock
	ids   int
	stop  func()
	ended chan struct{}
}

func newProbe(t *testing.T, schedule []time.Duration, reply http.HandlerFunc, onOutcome func(*store.Outcome)) (*probe, string) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "gw.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reply)
	t.Cleanup(srv.Close)
	now := time.Now().UTC()
	sub := &store.Subscription{ID: "s", Kind: store.KindWebhook, Source: store.SourceAPI, URL: srv.URL,
		Events: []string{"*"}, Active: true, CreatedAt: now, UpdatedAt: now}
	if err := st.CreateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	p := &probe{t: t, s: &hooked{Store: st}, clk: &probeClock{}, ended: make(chan struct{})}
	p.e = New(Options{Store: p.s, Plugins: builtin.Registry(), Now: p.clk.now, Logger: slog.New(slog.DiscardHandler),
		Delivery: func() config.Delivery {
			d := config.Default().Delivery
			d.Schedule, d.Jitter, d.QuickRetries, d.MaxInFlight, d.MaxInFlightPerSubscription = schedule, 0, 0, 16, 4
			return d
		}(),
		Security: config.Security{AllowPrivateNetworks: true},
		// Only the engine's own wake-ups count: no poll during the test.
		PollInterval: time.Hour, QuickRetryWait: 10 * time.Millisecond, OnOutcome: onOutcome})
	runCtx, cancel := context.WithCancel(ctx)
	p.stop = cancel
	go func() { p.e.Run(runCtx); close(p.ended) }()
	t.Cleanup(func() { cancel(); <-p.ended; st.Close() })
	return p, srv.URL
}

// ingest stores events the way the gateway's ingest flush does.
func (p *probe) ingest(evs ...*store.Event) []store.IngestResult {
	opts, end := p.e.BeginIngest(func() string { p.ids++; return fmt.Sprintf("d%04d", p.ids) })
	res, err := p.s.IngestEvents(context.Background(), evs, opts)
	end(res, err)
	if err != nil {
		p.t.Fatal(err)
	}
	return res
}

func ev(id string, at time.Time) *store.Event {
	return &store.Event{ID: id, Type: "x", Payload: []byte(`{}`), ReceivedAt: at}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("after %s: %s", d, what)
	return false
}

// A retry asked for (RetryDelivery + Wake) while the claim that leased
// the delivery is between its commit and the engine taking its result. Wake marks only lanes
// with rounds > 0 for a recheck; the lane has none yet. The round succeeds; the store makes the
// delivery due again at once (retry_requested); finish no longer marks the lane dirty, so
// nothing claims it until the poll.
func TestRetryAskedDuringAClaimIsMade(t *testing.T) {
	var hits atomic.Int64
	p, _ := newProbe(t, []time.Duration{time.Hour}, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(200)
	}, nil)
	var once sync.Once
	p.s.set(func(res store.ClaimResult) {
		if len(res.Claims) == 0 {
			return
		}
		once.Do(func() {
			// Committed, leased: the API's retry marks it retry_requested and wakes the engine.
			if _, err := p.s.RetryDelivery(context.Background(), res.Claims[0].Delivery.ID, p.clk.now().UTC()); err != nil {
				t.Error(err)
			}
			p.e.Wake()
		})
	}, nil)
	p.ingest(ev("e1", p.clk.now().UTC()))
	waitFor(t, 2*time.Second, "first attempt", func() bool { return hits.Load() >= 1 })
	waitFor(t, 3*time.Second, "the retry asked for while the claim was under way was never made (until the poll)",
		func() bool { return hits.Load() >= 2 })
}

// A claim's NextDue, read before a round's failure was recorded,
// overwrites the earlier nextDue that round's finish set. finish no longer marks the lane
// dirty, so only the poll finds the durable retry.
func TestClaimKeepsAnEarlierNextDue(t *testing.T) {
	var hits atomic.Int64
	release := make(chan struct{})
	p, _ := newProbe(t, []time.Duration{300 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			<-release
		}
		w.WriteHeader(500)
	}, nil)
	recorded := make(chan struct{}, 8)
	p.e.onOutcome = func(*store.Outcome) { recorded <- struct{}{} }
	now := p.clk.now().UTC()
	// e1 due now; e2 due in an hour (the store's NextDue for the lane).
	p.ingest(ev("e1", now), ev("e2", now.Add(time.Hour)))
	waitFor(t, 2*time.Second, "first attempt", func() bool { return hits.Load() >= 1 })
	var once sync.Once
	p.s.set(func(res store.ClaimResult) {
		once.Do(func() {
			// The claim has read NextDue (e2, +1h) and committed. e1's round now fails and is
			// recorded (retry in 300ms); its finish sets nextDue; then this claim's result lands.
			close(release)
			<-recorded
			time.Sleep(100 * time.Millisecond)
		})
	}, nil)
	p.e.Notify([]string{"s"}) // some commit marks the lane: a claim runs while e1 is in flight
	waitFor(t, 3*time.Second, "e1s durable retry (due 300ms after its failure) was not made", func() bool { return hits.Load() >= 2 })
}

// The clock moves past a delivery's birth lease between the ingest's
// commit and the handoff. A claim takes the delivery (its lease ran out; it is not in e.held
// yet, so renewDue did not renew it and the claim does not adopt it), then handoff starts a
// second round for it and overwrites e.held.
func TestClaimBeforeHandoffStartsOneRound(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	p, _ := newProbe(t, []time.Duration{time.Hour}, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("Webhook-Id")]++
		mu.Unlock()
		time.Sleep(200 * time.Millisecond)
		w.WriteHeader(200)
	}, nil)
	// Load the lane and clear its backlog with a first delivery, and wait for its round to end.
	p.ingest(ev("e0", p.clk.now().UTC()))
	waitFor(t, 2*time.Second, "first delivery recorded", func() bool {
		p.e.mu.Lock()
		defer p.e.mu.Unlock()
		l := p.e.lanes["s"]
		return l != nil && l.loaded && !l.backlog && len(p.e.held) == 0
	})
	claimed := make(chan struct{})
	var once sync.Once
	p.s.set(func(res store.ClaimResult) {
		if len(res.Claims) > 0 {
			once.Do(func() { close(claimed) })
		}
	}, func(res []store.IngestResult) {
		if len(res[0].Claims) == 0 {
			t.Error("not leased at birth")
			return
		}
		p.clk.jump(3 * time.Minute)   // past the birth lease
		p.e.Notify([]string{"other"}) // any kick; lane s is claimed as due
		p.e.mu.Lock()
		p.e.lanes["s"].dirty = true // as a poll's refreshDue would mark it
		p.e.mu.Unlock()
		p.e.kickLoop()
		select {
		case <-claimed:
		case <-time.After(2 * time.Second):
			t.Error("no claim")
		}
		time.Sleep(50 * time.Millisecond)
	})
	p.ingest(ev("e1", p.clk.now().UTC()))
	// Every round this process started for e1 has ended once nothing is held.
	waitFor(t, 3*time.Second, "e1 delivered and nothing left in flight", func() bool {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		p.e.mu.Lock()
		defer p.e.mu.Unlock()
		return n == 2 && len(p.e.held) == 0 && p.e.births == 0
	})
	mu.Lock()
	defer mu.Unlock()
	for id, n := range seen {
		if n > 1 {
			t.Errorf("delivery %s sent %d times by two rounds of this process", id, n)
		}
	}
}

// A claim must judge leases at the time the renewal before it renewed them at. With two
// readings of a clock that moved between them (an NTP step, a paused VM; here a clock that
// moves 20 s at every reading, more than a 15 s lease), the renewal renewed at one time and the
// claim took, at the other, the delivery of a round whose outcome was on its way to the store,
// and a second round sent it again.
func TestClockMovingBeforeAClaimStartsNoSecondRound(t *testing.T) {
	var sent, recorded atomic.Int32
	p, _ := newProbe(t, nil, func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		w.WriteHeader(200)
	}, func(*store.Outcome) { recorded.Add(1) })
	// Load the lane with a first delivery, so that the next is leased at birth.
	p.ingest(ev("e0", p.clk.now().UTC()))
	waitFor(t, 5*time.Second, "first delivery recorded", func() bool {
		p.e.mu.Lock()
		defer p.e.mu.Unlock()
		l := p.e.lanes["s"]
		return recorded.Load() == 1 && l != nil && l.loaded && !l.backlog && len(p.e.held) == 0
	})
	completing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	p.s.mu.Lock()
	p.s.beforeComplete = func() {
		once.Do(func() { close(completing); <-release })
	}
	p.s.mu.Unlock()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	if res := p.ingest(ev("e1", p.clk.now().UTC())); len(res[0].Claims) != 1 {
		t.Fatalf("not leased at birth: %+v", res)
	}
	select {
	case <-completing: // the round has sent its outcome; the store has not taken it yet
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome")
	}

	claimed := make(chan store.ClaimResult, 1)
	p.s.set(func(res store.ClaimResult) {
		select {
		case claimed <- res:
		default:
		}
	}, nil)
	p.clk.stepEach(20 * time.Second)
	p.e.mu.Lock()
	p.e.lanes["s"].dirty = true // as a poll's refreshDue would mark it
	p.e.mu.Unlock()
	p.e.kickLoop()
	select {
	case res := <-claimed:
		p.clk.stepEach(0)
		for _, c := range res.Claims {
			t.Errorf("the claim took %s (event %s), whose round's outcome is on its way", c.Delivery.ID, c.Event.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no claim")
	}
	close(release)
	waitFor(t, 5*time.Second, "the outcome recorded", func() bool {
		p.e.mu.Lock()
		defer p.e.mu.Unlock()
		return len(p.e.held) == 0
	})
	if n := sent.Load(); n != 2 {
		t.Errorf("the target got %d requests, want 2 (e0, then e1 once)", n)
	}
}
