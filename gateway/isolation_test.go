package gateway_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
)

// gauge counts requests a receiver is answering at once, and the most it ever did.
type gauge struct{ now, most atomic.Int32 }

func (g *gauge) enter() {
	n := g.now.Add(1)
	for m := g.most.Load(); n > m && !g.most.CompareAndSwap(m, n); m = g.most.Load() {
	}
}

func (g *gauge) leave() { g.now.Add(-1) }

// gate is a receiver's answer held until the test opens it (or the request goes away).
type gate struct {
	once sync.Once
	c    chan struct{}
}

// newGate returns a closed gate; defer its open, so that held requests end before their
// receivers close (which waits for them).
func newGate() *gate { return &gate{c: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.c) }) }

func (g *gate) wait(r *http.Request) {
	select {
	case <-g.c:
	case <-r.Context().Done():
	}
}

// events returns a JSON array of n events of one type with ids prefix0…prefix(n-1).
func events(prefix string, n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{"id": "%s%d", "type": "task.state.updated"}`, prefix, i)
	}
	return "[" + strings.Join(items, ",") + "]"
}

// setPolicy gives a subscription a delivery policy in the store.
func (e *env) setPolicy(t *testing.T, id string, p store.Policy) {
	t.Helper()
	if _, err := e.store.UpdateSubscription(context.Background(), id, func(s *store.Subscription) error {
		s.Policy = p
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// eventIDs returns the event ids a receiver got, in order.
func (rc *receiver) eventIDs() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	ids := make([]string, len(rc.got))
	for i, g := range rc.got {
		ids[i] = eventID(g.body)
	}
	return ids
}

func eventID(body []byte) string {
	_, rest, _ := strings.Cut(string(body), `"id": "`)
	id, _, _ := strings.Cut(rest, `"`)
	return id
}

// countDeliveries counts a subscription's deliveries with status in the store.
func (e *env) countDeliveries(t *testing.T, sub string, status store.DeliveryStatus) int {
	t.Helper()
	ds, err := e.store.ListDeliveries(context.Background(), store.DeliveryFilter{SubscriptionID: sub, Status: status}, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(ds)
}

// A subscriber that hangs, one that resets connections, one that answers 500, one that
// answers 429 and one that answers slowly, all on the same event type, take every slot the
// engine has in all (max_in_flight 8, 4 per subscription) and more; the healthy subscription
// beside them still gets every event while the hanging ones are still hanging, and no bad one
// ever has more than its own share in flight.
func TestBadSubscribersDoNotStallAHealthyOne(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.Timeout = 30 * time.Second // longer than the test: a hung attempt stays hung
		c.Delivery.MaxInFlight, c.Delivery.MaxInFlightPerSubscription = 8, 4
		c.Delivery.Schedule = []time.Duration{time.Hour}
	})
	hold := newGate()
	defer hold.open()
	var hangG, slowG, failG, healthyG gauge
	hang := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		hangG.enter()
		defer hangG.leave()
		hold.wait(r)
	})
	slow := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		slowG.enter()
		defer slowG.leave()
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	reset := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	})
	fail := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		failG.enter()
		defer failG.leave()
		w.WriteHeader(http.StatusInternalServerError)
	})
	limited := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	healthy := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		healthyG.enter()
		defer healthyG.leave()
		w.WriteHeader(http.StatusOK)
	})
	for _, rc := range []*receiver{hang, slow, reset, fail, limited} {
		e.subscribe(t, rc.URL, "")
	}
	// The bad ones are given their head start: every slot of the engine is taken.
	expect(t, e.post(t, events("warm", 10)), http.StatusAccepted)
	eventually(t, "the hanging and the slow subscriber hold their slots", func() bool {
		return hangG.now.Load() == 4 && slowG.now.Load() >= 1
	})
	good := e.subscribe(t, healthy.URL, "")
	began := time.Now()
	defer func() { t.Logf("the healthy subscriber got %d events in %s", healthy.count(), time.Since(began)) }()
	for i := range 4 {
		expect(t, e.post(t, events(fmt.Sprintf("b%d-", i), 10)), http.StatusAccepted)
	}
	eventually(t, "the healthy subscriber gets all 40 events", func() bool { return healthy.count() == 40 })
	if hangG.now.Load() != 4 {
		t.Fatalf("the hanging subscriber has %d requests open, want 4: it was not hanging throughout", hangG.now.Load())
	}
	eventually(t, "all 40 recorded as succeeded", func() bool { return e.countDeliveries(t, good, store.Succeeded) == 40 })
	for name, g := range map[string]*gauge{"hanging": &hangG, "slow": &slowG, "failing": &failG} {
		if m := g.most.Load(); m > 4 {
			t.Errorf("the %s subscriber had %d attempts in flight at once, more than its 4", name, m)
		}
	}
	if ids := healthy.eventIDs(); len(ids) != 40 || ids[0] == "" {
		t.Fatalf("the healthy subscriber got %d events (%v…)", len(ids), ids[:1])
	}
}

// With one slot, a delivery waiting for its quick retry does not hold it: the next delivery
// goes out meanwhile.
func TestQuickRetryWaitHoldsNoSlot(t *testing.T) {
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
		c.Delivery.QuickRetries = 1
	}, func(o *gatewayOptions) {
		o.PollInterval = 5 * time.Millisecond
		o.QuickRetryWait = time.Second
	})
	var tries atomic.Int32
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Webhook-Id") != "" && tries.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError) // the first attempt of the first event
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	id := e.subscribe(t, rc.URL, "")
	e.setPolicy(t, id, store.Policy{MaxInFlight: 1})
	expect(t, e.post(t, events("q", 2)), http.StatusAccepted)
	eventually(t, "both delivered", func() bool { return rc.count() == 3 })
	if got := strings.Join(rc.eventIDs(), " "); got != "q0 q1 q0" {
		t.Fatalf("requests in order %q, want q0 q1 q0: the retry wait held the only slot", got)
	}
}

// A fifo subscription gets its events one at a time in ingest order; a failing one blocks
// those after it until it succeeds, across a restart too.
func TestFIFOKeepsOrderAcrossFailuresAndRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	edit := func(c *config.Config) {
		c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
		c.Delivery.QuickRetries, c.Delivery.Jitter = 0, 0
		c.Delivery.Schedule = []time.Duration{time.Minute, time.Minute}
	}
	ids := func(prefix string) func(*gatewayOptions) {
		return func(o *gatewayOptions) {
			o.PollInterval = 5 * time.Millisecond
			var n atomic.Int32
			o.NewID = func() string { return fmt.Sprintf("%s-%04d", prefix, n.Add(1)) }
		}
	}
	var g gauge
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		g.enter()
		defer g.leave()
		time.Sleep(time.Millisecond) // room for a second request to overlap, were one sent
		if n == 2 {                  // f2's first attempt, when the order holds (checked below)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})

	first := newEnvAt(t, path, edit, ids("a"))
	sub := first.subscribe(t, rc.URL, "")
	first.setPolicy(t, sub, store.Policy{Ordering: store.FIFO})
	expect(t, first.post(t, `[{"id": "f1", "type": "task.state.updated"}, {"id": "f2", "type": "task.state.updated"},
		{"id": "f3", "type": "task.state.updated"}, {"id": "f4", "type": "task.state.updated"}]`), http.StatusAccepted)
	eventually(t, "f2 failed once and waits for its retry", func() bool {
		d := first.deliveryOf(t, "f2")
		return d["attempts"] == 1.0 && d["status"] == "pending"
	})
	if err := first.shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := first.store.Close(); err != nil { // one process, one file: the next gateway opens it
		t.Fatal(err)
	}
	if got := strings.Join(rc.eventIDs(), " "); got != "f1 f2" {
		t.Fatalf("before the restart the subscriber got %q, want f1 f2: f3 went past the failed f2", got)
	}

	second := newEnvAt(t, path, edit, ids("b"))
	expect(t, second.post(t, `{"id": "f5", "type": "task.state.updated"}`), http.StatusAccepted)
	second.clock.Set(start.Add(2 * time.Minute)) // f2's retry is due
	eventually(t, "all delivered", func() bool { return rc.count() == 6 })
	if got := strings.Join(rc.eventIDs(), " "); got != "f1 f2 f2 f3 f4 f5" {
		t.Fatalf("the subscriber got %q, want f1 f2 f2 f3 f4 f5", got)
	}
	if m := g.most.Load(); m != 1 {
		t.Fatalf("%d requests at once to a fifo subscription", m)
	}
}

// rate_limit spaces a subscription's attempts; none is dropped.
func TestRateLimitSpacesDeliveries(t *testing.T) {
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	id := e.subscribe(t, rc.URL, "")
	e.setPolicy(t, id, store.Policy{RateLimit: 20})
	expect(t, e.post(t, events("r", 8)), http.StatusAccepted)
	eventually(t, "all 8 delivered", func() bool { return rc.count() == 8 })
	// A token bucket of one at 20/s: eight attempts take at least seven intervals of 50 ms.
	if span := rc.request(7).at.Sub(rc.request(0).at); span < 300*time.Millisecond {
		t.Fatalf("8 deliveries at 20/s took %s", span)
	}
	eventually(t, "all succeeded", func() bool { return e.countDeliveries(t, id, store.Succeeded) == 8 })
}

// queuedBehindTwo subscribes a target that holds every answer, with two slots, and posts
// eight events: two are in flight when it returns, six wait.
func queuedBehindTwo(t *testing.T, e *env, rc *receiver, extra string) string {
	t.Helper()
	id := e.subscribe(t, rc.URL, extra)
	e.setPolicy(t, id, store.Policy{MaxInFlight: 2})
	expect(t, e.post(t, events("c", 8)), http.StatusAccepted)
	eventually(t, "two in flight", func() bool { return rc.count() == 2 })
	return id
}

// Every attempt uses the subscription as it is now: after its URL changes, the deliveries
// that were waiting go to the new URL; only the two already in flight went to the old one.
func TestAttemptsFollowAChangedURL(t *testing.T) {
	e := engineEnv(t, nil)
	hold := newGate()
	defer hold.open()
	old := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { hold.wait(r) })
	moved := newReceiver(t, nil)
	id := queuedBehindTwo(t, e, old, "")
	expect(t, e.do("PUT", "/v1/webhooks/"+id, `{"url": "`+moved.URL+`"}`), http.StatusOK)
	hold.open()
	eventually(t, "the rest went to the new URL", func() bool { return moved.count() == 6 })
	eventually(t, "all succeeded", func() bool { return e.countDeliveries(t, id, store.Succeeded) == 8 })
	if n := old.count(); n != 2 {
		t.Fatalf("the old URL got %d requests, want the 2 in flight", n)
	}
}

// After a registration's password is rotated, the waiting deliveries carry the new one.
func TestAttemptsUseARotatedPassword(t *testing.T) {
	e := engineEnv(t, nil)
	hold := newGate()
	defer hold.open()
	var auth sync.Map // Authorization header → count
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		n, _ := auth.LoadOrStore(r.Header.Get("Authorization"), new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		hold.wait(r)
	})
	r := e.do("POST", "/api/WebhookRegistrations", `{"requestId": "R1", "callBackUrl": "`+rc.URL+`",
		"callBackUserName": "u", "callBackPassword": "old", "sourceSenderId": "m"}`)
	expect(t, r, http.StatusCreated)
	id := r.json(t)["registrationId"].(string)
	e.setPolicy(t, id, store.Policy{MaxInFlight: 2})
	expect(t, e.post(t, events("p", 8)), http.StatusAccepted)
	eventually(t, "two in flight", func() bool { return rc.count() == 2 })
	expect(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"callBackPassword": "new"}`), http.StatusOK)
	hold.open()
	eventually(t, "all delivered", func() bool { return rc.count() == 8 })
	basic := func(p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+p)) }
	count := func(p string) int32 {
		n, ok := auth.Load(basic(p))
		if !ok {
			return 0
		}
		return n.(*atomic.Int32).Load()
	}
	if count("old") != 2 || count("new") != 6 {
		t.Fatalf("old password on %d requests, new on %d; want 2 and 6", count("old"), count("new"))
	}
}

// A deactivated subscription gets nothing more: its waiting deliveries stay pending (paused)
// with no attempt; the two in flight are recorded as they happened.
func TestNothingIsSentAfterDeactivation(t *testing.T) {
	e := engineEnv(t, nil)
	hold := newGate()
	defer hold.open()
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { hold.wait(r) })
	id := queuedBehindTwo(t, e, rc, "")
	expect(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"isActive": false}`), http.StatusOK)
	hold.open()
	eventually(t, "the two in flight succeeded", func() bool { return e.countDeliveries(t, id, store.Succeeded) == 2 })
	if err := e.shutdown(); err != nil { // nothing runs after this: a sync point
		t.Fatal(err)
	}
	if n := rc.count(); n != 2 {
		t.Fatalf("the deactivated subscription got %d requests, want the 2 in flight", n)
	}
	pending, err := e.store.ListDeliveries(context.Background(), store.DeliveryFilter{SubscriptionID: id, Status: store.Pending}, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range pending {
		if d.Attempts != 0 {
			t.Errorf("paused delivery %s has %d attempts", d.ID, d.Attempts)
		}
	}
	if len(pending) != 6 {
		t.Fatalf("%d pending, want 6 paused", len(pending))
	}
}

// After a delete, the deliveries waiting are failed without a request; the two in flight,
// answered 200, are recorded as succeeded.
func TestNothingIsSentAfterDeletion(t *testing.T) {
	e := engineEnv(t, nil)
	hold := newGate()
	defer hold.open()
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { hold.wait(r) })
	id := queuedBehindTwo(t, e, rc, "")
	expect(t, e.do("DELETE", "/v1/webhooks/"+id, nil), http.StatusNoContent)
	hold.open()
	eventually(t, "the two in flight succeeded", func() bool { return e.countDeliveries(t, id, store.Succeeded) == 2 })
	if err := e.shutdown(); err != nil {
		t.Fatal(err)
	}
	if n := rc.count(); n != 2 {
		t.Fatalf("the deleted subscription got %d requests, want the 2 in flight", n)
	}
	failed, err := e.store.ListDeliveries(context.Background(), store.DeliveryFilter{SubscriptionID: id, Status: store.Failed}, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range failed {
		if d.Attempts != 0 || d.LastError != "subscription deleted" {
			t.Errorf("delivery %s: %d attempts, %q", d.ID, d.Attempts, d.LastError)
		}
	}
	if len(failed) != 6 {
		t.Fatalf("%d failed, want 6", len(failed))
	}
}

// A retry asked for while the delivery is in flight does not start a second round beside it:
// it runs after the first, and the attempt count agrees with the attempt log.
func TestRetryWhileInFlightRunsAfterIt(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 0 })
	hold := newGate()
	defer hold.open()
	var g gauge
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		g.enter()
		defer g.leave()
		if n == 1 {
			hold.wait(r)
		}
	})
	e.subscribe(t, rc.URL, "")
	expect(t, e.post(t, `{"id": "r1", "type": "task.state.updated"}`), http.StatusAccepted)
	eventually(t, "in flight", func() bool { return rc.count() == 1 })
	d := e.deliveryOf(t, "r1")
	expect(t, e.do("POST", "/v1/deliveries/"+d["id"].(string)+"/retry", nil), http.StatusAccepted)
	hold.open()
	eventually(t, "sent again after the first round", func() bool { return rc.count() == 2 })
	eventually(t, "recorded", func() bool {
		d := e.deliveryOf(t, "r1")
		return d["status"] == "succeeded" && d["attempts"] == 2.0
	})
	d = e.deliveryOf(t, "r1")
	if n := len(d["attemptLog"].([]any)); n != 2 {
		t.Fatalf("attempts 2, attempt log %d", n)
	}
	if g.most.Load() != 1 {
		t.Fatalf("%d requests for one delivery at once", g.most.Load())
	}
}

// The oauth2 token outlives failed rounds: it lives as long as the subscription's
// configuration.
func TestOAuth2TokenSurvivesFailedRounds(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 0
		c.Delivery.Schedule = []time.Duration{time.Minute, time.Minute, time.Minute, time.Minute}
		c.Delivery.ErrorStateAfter = 100
	})
	var issued atomic.Int32
	tokens := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token": "tok-%d", "token_type": "Bearer", "expires_in": 3600}`, issued.Add(1))
	})
	target := newReceiver(t, status(http.StatusInternalServerError))
	id := e.subscribe(t, target.URL, `, "plugins": [{"name": "oauth2", "config": {"token_url": "`+tokens.URL+`",
		"client_id": "gw", "client_secret": "s"}}]`)
	before := e.do("GET", "/v1/webhooks/"+id, nil).json(t)["updatedAt"]
	e.post(t, `{"id": "o1", "type": "task.state.updated"}`)
	for round := 1; round <= 4; round++ {
		eventually(t, "round", func() bool { return e.deliveryOf(t, "o1")["attempts"] == float64(round) })
		e.clock.Set(start.Add(time.Duration(round) * time.Minute))
	}
	if n := issued.Load(); n != 1 {
		t.Fatalf("the token was fetched %d times for 4 failed rounds, want 1", n)
	}
	if after := e.do("GET", "/v1/webhooks/"+id, nil).json(t)["updatedAt"]; after != before {
		t.Fatalf("updatedAt moved with delivery failures: %v → %v", before, after)
	}
}

// A plugin that fails before a quick retry (oauth2's token fetch after a 401) is in the
// attempt log and is the reason; it is not swallowed.
func TestPluginFailureOnAQuickRetryIsRecorded(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 1 })
	var issued atomic.Int32
	tokens := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if issued.Add(1) > 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}`)
	})
	target := newReceiver(t, status(http.StatusUnauthorized))
	e.subscribe(t, target.URL, `, "plugins": [{"name": "oauth2", "config": {"token_url": "`+tokens.URL+`",
		"client_id": "gw", "client_secret": "s"}}]`)
	e.post(t, `{"id": "q1", "type": "task.state.updated"}`)
	eventually(t, "the round is recorded", func() bool { return e.deliveryOf(t, "q1")["attempts"] == 2.0 })
	d := e.deliveryOf(t, "q1")
	log := d["attemptLog"].([]any)
	if len(log) != 2 || log[0].(map[string]any)["statusCode"] != 401.0 {
		t.Fatalf("attempt log %v", log)
	}
	want := "plugin 0: oauth2: the token endpoint answered HTTP 500"
	if got := log[1].(map[string]any)["error"]; got != want || d["lastError"] != want {
		t.Fatalf("second attempt %v, lastError %v; want %q", got, d["lastError"], want)
	}
	if target.count() != 1 {
		t.Fatalf("the target got %d requests, want 1", target.count())
	}
}

// When the clock jumps past a round's lease while it runs, the delivery is not sent a second
// time beside it, and its outcome is recorded once.
func TestLeaseExpiryDuringARoundSendsOnce(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 0 })
	hold := newGate()
	defer hold.open()
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { hold.wait(r) })
	id := e.subscribe(t, rc.URL, "")
	expect(t, e.post(t, `{"id": "l1", "type": "task.state.updated"}`), http.StatusAccepted)
	eventually(t, "in flight", func() bool { return rc.count() == 1 })
	e.clock.Set(start.Add(time.Hour)) // past any lease
	// l2 is claimed after the jump, by a claim of the same subscription that would have
	// taken l1 again, had it been free to.
	expect(t, e.post(t, `{"id": "l2", "type": "task.state.updated"}`), http.StatusAccepted)
	eventually(t, "l2 in flight", func() bool { return rc.count() == 2 })
	hold.open()
	eventually(t, "both recorded", func() bool { return e.countDeliveries(t, id, store.Succeeded) == 2 })
	if got := strings.Join(rc.eventIDs(), " "); got != "l1 l2" {
		t.Fatalf("the subscriber got %q, want l1 l2", got)
	}
	d := e.deliveryOf(t, "l1")
	if d["attempts"] != 1.0 || len(d["attemptLog"].([]any)) != 1 {
		t.Fatalf("l1: attempts %v, log %d; want 1 and 1", d["attempts"], len(d["attemptLog"].([]any)))
	}
}

// A subscription that keeps failing becomes a probe: one delivery at a time, its quick
// retries and all, rather than every delivery at once.
func TestFailingSubscriptionIsProbedOneDeliveryAtATime(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 2
		c.Delivery.Schedule = []time.Duration{time.Hour}
		c.Delivery.ErrorStateAfter = 1000
	})
	rc := newReceiver(t, status(http.StatusInternalServerError))
	id := e.subscribe(t, rc.URL, "")
	expect(t, e.post(t, events("p", 50)), http.StatusAccepted)
	eventually(t, "every delivery had its round", func() bool { return rc.count() == 150 })
	eventually(t, "recorded", func() bool {
		ds, err := e.store.ListDeliveries(context.Background(), store.DeliveryFilter{SubscriptionID: id, Status: store.Pending}, store.ListOptions{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.Attempts != 3 {
				return false
			}
		}
		return len(ds) == 50
	})
	// The first deliveries went out together, before anything had failed; the last ten, one
	// after another: each one's three attempts in a row.
	for i := 120; i < 150; i += 3 {
		a, b, c := rc.request(i).header.Get("Webhook-Id"), rc.request(i+1).header.Get("Webhook-Id"), rc.request(i+2).header.Get("Webhook-Id")
		if a != b || b != c {
			t.Fatalf("requests %d–%d were for %s, %s, %s: a probing subscription had more than one delivery under way", i, i+2, a, b, c)
		}
	}
}

// A round that runs long has its lease renewed, so its delivery is never due underneath it.
func TestLeasesAreRenewedWhileARoundRuns(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 0 })
	hold := newGate()
	defer hold.open()
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { hold.wait(r) })
	e.subscribe(t, rc.URL, "")
	expect(t, e.post(t, `{"id": "long", "type": "task.state.updated"}`), http.StatusAccepted)
	eventually(t, "in flight", func() bool { return rc.count() == 1 })
	// The claim's lease (delivery.lease) ends at start+lease: then the delivery would be due
	// again.
	lease := config.DefaultLease
	dueAt := func(at time.Time) bool {
		st, err := e.store.Stats(context.Background(), at)
		if err != nil {
			t.Fatal(err)
		}
		return !st.OldestDue.IsZero()
	}
	later := start.Add(lease * 5 / 4)
	if !dueAt(later) {
		t.Fatal("the first lease already reaches past start+1.25 leases")
	}
	e.clock.Set(start.Add(lease / 2)) // a third of the lease and more has gone by
	eventually(t, "the lease renewed past start+1.25 leases", func() bool { return !dueAt(later) })
	hold.open()
	eventually(t, "delivered once", func() bool { return e.deliveryStatus(t, "long") == "succeeded" })
	if rc.count() != 1 {
		t.Fatalf("%d requests", rc.count())
	}
}

// Retries asked for while many deliveries are in flight all run, however the completions and
// new claims interleave (a claim must never be handed to a round that has already ended).
func TestRetriesOfDeliveriesInFlightAllRun(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 0 })
	hold := newGate()
	defer hold.open()
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= 16 {
			hold.wait(r)
		}
	})
	id := e.subscribe(t, rc.URL, "")
	e.setPolicy(t, id, store.Policy{MaxInFlight: 16})
	expect(t, e.post(t, events("h", 16)), http.StatusAccepted)
	eventually(t, "16 in flight", func() bool { return rc.count() == 16 })
	for _, d := range e.subscriptionDeliveries(t, id) {
		expect(t, e.do("POST", "/v1/deliveries/"+d["id"].(string)+"/retry", nil), http.StatusAccepted)
	}
	// New events keep the engine claiming while the held rounds complete.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				e.post(t, fmt.Sprintf(`{"id": "k%d", "type": "task.state.updated"}`, i))
			}
		}
	}()
	hold.open()
	eventually(t, "every retry ran", func() bool {
		for i := range 16 {
			if d := e.deliveryOf(t, fmt.Sprintf("h%d", i)); d["status"] != "succeeded" || d["attempts"] != 2.0 {
				return false
			}
		}
		return true
	})
	close(stop)
	<-stopped
}

// A registration reactivated with PUT isActive: true gets its waiting deliveries at once, not
// at the next poll.
func TestReactivationThroughPUTResumesAtOnce(t *testing.T) {
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
	}, func(o *gatewayOptions) { o.PollInterval = time.Minute }) // only a wake can resume them
	hold := newGate()
	defer hold.open()
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { hold.wait(r) })
	r := e.do("POST", "/api/WebhookRegistrations", `{"requestId": "R1", "callBackUrl": "`+rc.URL+`",
		"callBackUserName": "u", "callBackPassword": "p", "sourceSenderId": "m"}`)
	expect(t, r, http.StatusCreated)
	id := r.json(t)["registrationId"].(string)
	e.setPolicy(t, id, store.Policy{MaxInFlight: 2})
	expect(t, e.post(t, events("c", 8)), http.StatusAccepted)
	eventually(t, "two in flight", func() bool { return rc.count() == 2 })
	expect(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"isActive": false}`), http.StatusOK)
	hold.open()
	eventually(t, "the two in flight succeeded", func() bool { return e.countDeliveries(t, id, store.Succeeded) == 2 })
	expect(t, e.do("PUT", "/api/WebhookRegistrations/"+id, `{"isActive": true}`), http.StatusOK)
	eventually(t, "the six waiting delivered", func() bool { return rc.count() == 8 })
}

// A rate-limited subscription's deliveries wait for its token bucket without holding the
// engine's slots: another subscription still gets them all.
func TestRateLimitWaitHoldsNoSlot(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.MaxInFlight, c.Delivery.MaxInFlightPerSubscription = 8, 8
	})
	limited := newReceiver(t, nil)
	a := e.subscribe(t, limited.URL, `, "events": ["transaction.state.updated"]`)
	e.setPolicy(t, a, store.Policy{RateLimit: 0.5})
	var g gauge
	hold := newGate()
	defer hold.open()
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		g.enter()
		defer g.leave()
		hold.wait(r)
	})
	e.subscribe(t, rc.URL, `, "events": ["task.state.updated"]`)
	var batch []string
	for i := range 8 {
		batch = append(batch, fmt.Sprintf(`{"id": "a%d", "type": "transaction.state.updated"}`, i))
	}
	expect(t, e.post(t, "["+strings.Join(batch, ",")+"]"), http.StatusAccepted)
	eventually(t, "the limited subscription's first", func() bool { return limited.count() == 1 })
	expect(t, e.post(t, events("b", 8)), http.StatusAccepted)
	eventually(t, "all 8 slots to the other subscription", func() bool { return g.now.Load() == 8 })
}

// A declared subscription removed from the file and declared again with another token is
// sent with the new token: plugin instances follow their configuration, not the version
// (which starts again at 1).
func TestRedeclaredSubscriptionUsesItsNewPlugins(t *testing.T) {
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	sync := func(y string) {
		t.Helper()
		cfg, err := config.Parse([]byte("security: {require_https: false, allow_private_networks: true}\n"+y),
			func(string) (string, bool) { return "", false }, builtin.Registry())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.gw.SyncSubscriptions(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	declare := func(token string) string {
		return "subscriptions:\n  - id: billing\n    url: " + rc.URL +
			"\n    plugins:\n      - name: bearer\n        config: { token: " + token + " }\n"
	}
	sync(declare("AAAA"))
	expect(t, e.post(t, `{"id": "x1", "type": "task.state.updated"}`), http.StatusAccepted)
	eventually(t, "recorded", func() bool { return e.deliveryStatus(t, "x1") == "succeeded" })
	sync("subscriptions: []\n")
	sync(declare("BBBB"))
	expect(t, e.post(t, `{"id": "x2", "type": "task.state.updated"}`), http.StatusAccepted)
	eventually(t, "delivered", func() bool { return rc.count() == 2 })
	if got := rc.request(1).header.Get("Authorization"); got != "Bearer BBBB" {
		t.Fatalf("the declared-again subscription sent %q, want Bearer BBBB", got)
	}
}

// The delivery client's keep-alive connections end with Serve.
func TestNoDeliveryConnectionOutlivesServe(t *testing.T) {
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	e.subscribe(t, rc.URL, "")
	expect(t, e.post(t, `{"id": "g1", "type": "task.state.updated"}`), http.StatusAccepted)
	eventually(t, "delivered", func() bool { return e.deliveryStatus(t, "g1") == "succeeded" })
	http.DefaultClient.CloseIdleConnections() // the test's own
	if err := e.shutdown(); err != nil {
		t.Fatal(err)
	}
	// Closed connections end their goroutines shortly after; the receiver's own connections
	// are httptest's.
	eventually(t, "no client connection left", func() bool {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "persistConn") && !strings.Contains(g, "httptest") {
				return false
			}
		}
		return true
	})
}

// Rounds of one subscription that start together share its plugin instances: twenty
// deliveries at once fetch one oauth2 token.
func TestConcurrentRoundsShareOnePluginInstance(t *testing.T) {
	e := engineEnv(t, nil)
	var issued atomic.Int32
	tokens := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token": "tok-%d", "token_type": "Bearer", "expires_in": 3600}`, issued.Add(1))
	})
	target := newReceiver(t, nil)
	id := e.subscribe(t, target.URL, `, "plugins": [{"name": "oauth2", "config": {"token_url": "`+tokens.URL+`",
		"client_id": "gw", "client_secret": "s"}}]`)
	expect(t, e.post(t, events("c", 20)), http.StatusAccepted)
	eventually(t, "all delivered", func() bool { return e.countDeliveries(t, id, store.Succeeded) == 20 })
	if n := issued.Load(); n != 1 {
		t.Fatalf("%d tokens fetched for 20 concurrent deliveries, want 1", n)
	}
}
