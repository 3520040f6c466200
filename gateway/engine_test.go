package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// receiver is a subscriber: an httptest server that records what it gets and answers with
// the status its handle returns (it may also block, redirect, or drop the connection).
type receiver struct {
	*httptest.Server
	mu    sync.Mutex
	got   []received
	reply func(n int, w http.ResponseWriter, r *http.Request) // n counts requests from 1
}

type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newReceiver(t *testing.T, reply func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{reply: reply}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		if rc.reply != nil {
			rc.reply(n, w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// status answers every request with code.
func status(code int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

func (rc *receiver) request(i int) received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.got[i]
}

// engineEnv is a gateway that delivers to loopback receivers with test-sized timings: quick
// retries wait a millisecond and the dispatcher looks every few milliseconds, so moving the
// clock past a scheduled retry makes it happen at once.
func engineEnv(t *testing.T, edit func(*config.Config)) *env {
	return newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowPrivateNetworks = true // the subscribers are on loopback
		c.Delivery.Jitter = 0
		c.Delivery.Timeout = 2 * time.Second
		if edit != nil {
			edit(c)
		}
	}, func(o *gatewayOptions) {
		o.PollInterval = 5 * time.Millisecond
		o.QuickRetryWait = time.Millisecond
	})
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within 10s: %s", what)
}

func (e *env) subscribe(t *testing.T, url string, extra string) string {
	t.Helper()
	r := e.do("POST", "/v1/webhooks", `{"url": "`+url+`"`+extra+`}`)
	expect(t, r, http.StatusCreated)
	return r.json(t)["id"].(string)
}

func (e *env) post(t *testing.T, body string) response {
	t.Helper()
	return e.doAs("", "POST", "/v1/events", body)
}

// deliveryOf returns the only delivery of an event.
func (e *env) deliveryOf(t *testing.T, eventID string) map[string]any {
	t.Helper()
	r := e.do("GET", "/v1/events/"+eventID, nil)
	expect(t, r, http.StatusOK)
	ds := r.json(t)["deliveries"].([]any)
	if len(ds) != 1 {
		t.Fatalf("event %s has %d deliveries, want 1", eventID, len(ds))
	}
	d := e.do("GET", "/v1/deliveries/"+ds[0].(map[string]any)["id"].(string), nil)
	expect(t, d, http.StatusOK)
	return d.json(t)
}

func (e *env) deliveryStatus(t *testing.T, eventID string) string {
	return e.deliveryOf(t, eventID)["status"].(string)
}

func TestDeliverExactBytesAndHeaders(t *testing.T) {
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	e.subscribe(t, rc.URL+"/hooks?team=a", `, "headers": {"X-Team": "billing"},
		"plugins": [{"name": "bearer", "config": {"token": "t0k"}}]`)

	body := "{\n  \"id\": \"ev-1\",\n  \"type\": \"transaction.state.updated\", \"created\": \"2022-01-01T00:00:00+00:00\",\n" +
		"  \"transaction\": {\"id\": \"b659c273\", \"state\": \"completed\", \"amount\": 1.50}\n}"
	r := e.post(t, body)
	expect(t, r, http.StatusAccepted)
	if got := r.json(t); got["id"] != "ev-1" || got["type"] != "transaction.state.updated" || got["deliveries"] != 1.0 || got["duplicate"] != nil {
		t.Fatalf("answer %s", r.body)
	}
	eventually(t, "delivered", func() bool { return rc.count() == 1 })
	got := rc.request(0)
	if string(got.body) != body {
		t.Fatalf("body changed on the way:\n got %q\nwant %q", got.body, body)
	}
	d := e.deliveryOf(t, "ev-1")
	for name, want := range map[string]string{
		"Content-Type":  "application/json",
		"User-Agent":    "webhook-gateway/dev",
		"Webhook-Id":    d["id"].(string),
		"X-Team":        "billing",
		"Authorization": "Bearer t0k",
	} {
		if v := got.header.Get(name); v != want {
			t.Errorf("%s: %q, want %q", name, v, want)
		}
	}
	if ts, err := strconv.ParseInt(got.header.Get("Webhook-Timestamp"), 10, 64); err != nil || ts != start.Unix() {
		t.Errorf("webhook-timestamp %q, want %d (the attempt's time)", got.header.Get("Webhook-Timestamp"), start.Unix())
	}
	eventually(t, "succeeded", func() bool { return e.deliveryStatus(t, "ev-1") == "succeeded" })
	log := e.deliveryOf(t, "ev-1")["attemptLog"].([]any)
	if len(log) != 1 || log[0].(map[string]any)["statusCode"] != 200.0 {
		t.Fatalf("attempt log %v", log)
	}
}

func TestIngestFillsIDAndCreated(t *testing.T) {
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	e.subscribe(t, rc.URL, "")
	r := e.post(t, `{"type": "task.state.updated", "task": {"id": "x"}}`)
	expect(t, r, http.StatusAccepted)
	id := r.json(t)["id"].(string)
	eventually(t, "delivered", func() bool { return rc.count() == 1 })
	var ev map[string]any
	if err := json.Unmarshal(rc.request(0).body, &ev); err != nil {
		t.Fatalf("delivered body is not JSON: %v: %s", err, rc.request(0).body)
	}
	if ev["id"] != id || ev["created"] != "2026-03-04T05:06:07+00:00" || ev["type"] != "task.state.updated" {
		t.Fatalf("delivered %s", rc.request(0).body)
	}
	if !uuidPattern.MatchString(id) {
		t.Fatalf("generated id %q", id)
	}
}

func TestIngestBadInputStoresNothing(t *testing.T) {
	// Under Fiber's own limit (64 KiB), so the handler reads the body and answers 413 itself.
	e := engineEnv(t, func(c *config.Config) { c.Ingest.MaxBodyBytes = 16 << 10 })
	rc := newReceiver(t, nil)
	sub := e.subscribe(t, rc.URL, "")
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"type":"task.state.updated"},`, 1001), ",") + "]"
	cases := []struct {
		name, body string
		status     int
		fields     []string
	}{
		{"empty", ``, 400, nil},
		{"malformed", `{"type": "task.state.updated"`, 400, nil},
		{"not an object", `"task.state.updated"`, 400, []string{"event"}},
		{"array of non-objects", `[1]`, 400, []string{"[0]"}},
		{"missing type", `{"id": "a"}`, 400, []string{"type"}},
		{"type not a string", `{"type": 5}`, 400, []string{"type"}},
		{"id not a string", `{"id": 5, "type": "task.state.updated"}`, 400, []string{"id"}},
		{"empty id", `{"id": "", "type": "task.state.updated"}`, 400, []string{"id"}},
		{"null created", `{"type": "task.state.updated", "created": null}`, 400, []string{"created"}},
		{"keys match exactly", `{"Type": "task.state.updated", "ID": "a"}`, 400, []string{"type"}},
		{"type twice", `{"type": "task.state.updated", "type": "transaction.state.updated"}`, 400, []string{"event"}},
		{"unknown type", `{"type": "payment.made"}`, 422, []string{"type"}},
		{"one bad in a batch", `[{"id": "ok-1", "type": "task.state.updated"}, {"id": "ok-2", "type": "nope"}]`, 422, []string{"[1].type"}},
		{"malformed in a batch", `[{"id": "ok-3", "type": "task.state.updated"}, {"type": 1}]`, 400, []string{"[1].type"}},
		{"id not UTF-8", "{\"id\": \"u-\xff\", \"type\": \"task.state.updated\"}", 400, []string{"id"}},
		{"id not UTF-8 in a batch", "[{\"id\": \"u-\xfe\", \"type\": \"task.state.updated\"}, {\"id\": \"ok-4\", \"type\": \"task.state.updated\"}]", 400, []string{"[0].id"}},
		{"id with an unpaired high surrogate", `{"id": "u-\ud800", "type": "task.state.updated"}`, 400, []string{"id"}},
		{"id with an unpaired low surrogate", `[{"id": "u-\udc00x", "type": "task.state.updated"}]`, 400, []string{"[0].id"}},
		{"batch too large", many, 413, nil},
		{"body too large", `{"type": "task.state.updated", "pad": "` + strings.Repeat("x", 20<<10) + `"}`, 413, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := expectProblem(t, e.post(t, tc.body), tc.status, tc.fields...)
			if tc.status == 422 && !strings.Contains(p["detail"].(string), "transaction.state.updated, task.state.updated") {
				t.Errorf("422 does not list the accepted types: %v", p["detail"])
			}
		})
	}
	for _, id := range []string{"a", "ok-1", "ok-2", "ok-3", "ok-4"} {
		expectProblem(t, e.do("GET", "/v1/events/"+id, nil), 404)
	}
	// Most refused events have no id to look up: the subscription has no delivery at all.
	if ds := e.subscriptionDeliveries(t, sub); len(ds) != 0 {
		t.Fatalf("refused input made %d deliveries: %v", len(ds), ds)
	}
	// A good event is then the receiver's first and only one.
	expect(t, e.post(t, `{"id": "good", "type": "task.state.updated"}`), 202)
	eventually(t, "the good event succeeded", func() bool { return e.deliveryStatus(t, "good") == "succeeded" })
	if n := rc.count(); n != 1 {
		t.Fatalf("the receiver got %d requests, want only the good event", n)
	}
	if body := rc.request(0).body; !strings.Contains(string(body), `"good"`) {
		t.Fatalf("the receiver got %s, want the good event", body)
	}
	if ds := e.subscriptionDeliveries(t, sub); len(ds) != 1 {
		t.Fatalf("%d deliveries, want only the good event's", len(ds))
	}
}

// Event ids are compared as the producer wrote them: ids that differ are different events,
// however they are escaped; ids that are the same string are duplicates.
func TestEventIDsAreExact(t *testing.T) {
	e := engineEnv(t, nil)
	ctx := context.Background()
	for _, body := range []string{"{\"id\": \"u-\xff\", \"type\": \"task.state.updated\"}", "{\"id\": \"u-\xfe\", \"type\": \"task.state.updated\"}"} {
		expectProblem(t, e.post(t, body), http.StatusBadRequest, "id")
	}
	if _, _, err := e.store.GetEvent(ctx, "u-\uFFFD"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an id that is not UTF-8 was stored as u-\\ufffd: %v", err)
	}
	for _, c := range []struct {
		body      string
		duplicate bool
	}{
		{`{"id": "u-\u00e9", "type": "task.state.updated"}`, false},
		{`{"id": "u-é", "type": "task.state.updated"}`, true}, // the same string as \u00e9
		{`{"id": "u-\ud83d\ude00", "type": "task.state.updated"}`, false},
		{`{"id": "u-😀", "type": "task.state.updated"}`, true},
		{`{"id": "u-\ufffd", "type": "task.state.updated"}`, false},  // U+FFFD itself, written out
		{`{"id": "u-\\ud800", "type": "task.state.updated"}`, false}, // a backslash, then "ud800"
	} {
		r := e.post(t, c.body)
		expect(t, r, http.StatusAccepted)
		if got := r.json(t)["duplicate"] == true; got != c.duplicate {
			t.Errorf("%s: duplicate %v, want %v", c.body, got, c.duplicate)
		}
	}
	for _, id := range []string{"u-é", "u-😀", "u-\uFFFD", `u-\ud800`} {
		if _, _, err := e.store.GetEvent(ctx, id); err != nil {
			t.Errorf("event %q: %v", id, err)
		}
	}
}

func TestIngestTokens(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Ingest.Tokens = []string{"producer-token"} })
	for _, token := range []string{"", "wrong", adminToken} {
		expectProblem(t, e.doAs(token, "POST", "/v1/events", `{"type": "task.state.updated"}`), 401)
	}
	expect(t, e.doAs("producer-token", "POST", "/v1/events", `{"type": "task.state.updated"}`), 202)
}

func TestDuplicatesAreNotStoredOrDeliveredAgain(t *testing.T) {
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	sub := e.subscribe(t, rc.URL, "")
	first := e.post(t, `{"id": "dup", "type": "task.state.updated", "n": 1}`).json(t)
	again := e.post(t, `{"id": "dup", "type": "task.state.updated", "n": 2}`)
	expect(t, again, 202)
	a := again.json(t)
	if a["duplicate"] != true || a["id"] != "dup" || a["deliveries"] != first["deliveries"] || first["duplicate"] != nil {
		t.Fatalf("first %v, again %v", first, a)
	}
	batch := e.post(t, `[{"id": "b1", "type": "task.state.updated"}, {"id": "b1", "type": "task.state.updated"}, {"id": "dup", "type": "task.state.updated"}]`).list(t)
	if batch[0]["duplicate"] != nil || batch[1]["duplicate"] != true || batch[2]["duplicate"] != true {
		t.Fatalf("batch answers %v", batch)
	}
	// The store holds one delivery for dup and one for b1, and nothing else.
	for _, id := range []string{"dup", "b1"} {
		if ds := e.eventDeliveries(t, id); len(ds) != 1 {
			t.Fatalf("event %s has %d deliveries, want 1: %v", id, len(ds), ds)
		}
	}
	if ds := e.subscriptionDeliveries(t, sub); len(ds) != 2 {
		t.Fatalf("the subscription has %d deliveries, want 2 (dup once, b1 once): %v", len(ds), ds)
	}
	for _, id := range []string{"dup", "b1"} {
		eventually(t, id+" succeeded", func() bool { return e.deliveryStatus(t, id) == "succeeded" })
		if d := e.deliveryOf(t, id); d["attempts"] != 1.0 || len(attemptsMatchLog(t, d)) != 1 {
			t.Fatalf("%s: %v attempts, want 1", id, d["attempts"])
		}
	}
	// A sentinel event, delivered after both, is the receiver's third request.
	expect(t, e.post(t, `{"id": "sentinel", "type": "task.state.updated"}`), 202)
	eventually(t, "the sentinel succeeded", func() bool { return e.deliveryStatus(t, "sentinel") == "succeeded" })
	if rc.count() != 3 {
		t.Fatalf("%d requests, want 3 (dup once, b1 once, the sentinel)", rc.count())
	}
	var dup []string
	for i := 0; i < 3; i++ {
		if body := string(rc.request(i).body); strings.Contains(body, `"dup"`) {
			dup = append(dup, body)
		}
	}
	if len(dup) != 1 || !strings.Contains(dup[0], `"n": 1`) {
		t.Fatalf("dup was delivered as %q, want once with the first body", dup)
	}
}

func TestFanOutFollowsEventsAndActiveState(t *testing.T) {
	e := engineEnv(t, nil)
	all, tasks, inactive := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	allID := e.subscribe(t, all.URL, "")
	tasksID := e.subscribe(t, tasks.URL, `, "events": ["task.state.updated"]`)
	reg := e.do("POST", "/api/WebhookRegistrations", `{"requestId":"r","callBackUrl":"`+inactive.URL+`","callBackUserName":"u","callBackPassword":"p","sourceSenderId":"s"}`).json(t)
	regID := reg["registrationId"].(string)
	expect(t, e.do("DELETE", "/api/WebhookRegistrations/"+regID, nil), 200)

	r := e.post(t, `[{"id": "t1", "type": "transaction.state.updated"}, {"id": "k1", "type": "task.state.updated"}]`).list(t)
	if r[0]["deliveries"] != 1.0 || r[1]["deliveries"] != 2.0 {
		t.Fatalf("fan-out %v", r)
	}
	// Which subscriptions got a delivery is in the store: exactly the active ones whose
	// events match, never the deactivated registration.
	targets := func(eventID string) []string {
		var ids []string
		for _, d := range e.eventDeliveries(t, eventID) {
			ids = append(ids, d["subscriptionId"].(string))
		}
		slices.Sort(ids)
		return ids
	}
	wantK1 := []string{allID, tasksID}
	slices.Sort(wantK1)
	if got := targets("t1"); !slices.Equal(got, []string{allID}) {
		t.Fatalf("t1 delivered to %v, want only %s", got, allID)
	}
	if got := targets("k1"); !slices.Equal(got, wantK1) {
		t.Fatalf("k1 delivered to %v, want %v (not the deactivated %s)", got, wantK1, regID)
	}
	if ds := e.subscriptionDeliveries(t, regID); len(ds) != 0 {
		t.Fatalf("the deactivated registration has %d deliveries", len(ds))
	}
	eventually(t, "fan-out delivered", func() bool { return all.count() == 2 && tasks.count() == 1 })
	if inactive.count() != 0 {
		t.Fatal("a deactivated registration received an event")
	}
	if auth := all.request(0).header.Get("Authorization"); auth != "" {
		t.Fatalf("a webhook got Authorization %q", auth)
	}
}

// apiTime is how the delivery routes write times.
const apiTime = "2006-01-02T15:04:05.000Z07:00"

func TestQuickRetriesThenDurableRetry(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 2
		c.Delivery.Schedule = []time.Duration{5 * time.Second, time.Minute}
	})
	// The first two answers move the clock on a second each, so every quick retry happens at
	// a time of its own, which its webhook-timestamp and its attempt log entry must show.
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			e.clock.Set(start.Add(time.Duration(n) * time.Second))
		}
		if n <= 4 {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "boom "+strconv.Itoa(n))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	sentinel := newReceiver(t, nil)
	e.subscribe(t, rc.URL, `, "events": ["task.state.updated"]`)
	e.subscribe(t, sentinel.URL, `, "events": ["transaction.state.updated"]`)
	e.post(t, `{"id": "r1", "type": "task.state.updated"}`)
	eventually(t, "the first round recorded", func() bool { return e.deliveryOf(t, "r1")["attempts"].(float64) >= 1 })
	d := e.deliveryOf(t, "r1")
	// The last quick retry was at start+2s: the durable retry is due 5s after it.
	if d["attempts"] != 3.0 || d["status"] != "pending" || d["nextAttemptAt"] != "2026-03-04T05:06:14.891Z" || d["lastStatusCode"] != 500.0 {
		t.Fatalf("after the first round: %v", d)
	}
	log := attemptsMatchLog(t, d)
	if rc.count() != 3 {
		t.Fatalf("the receiver got %d requests in the first round, want 3", rc.count())
	}
	for i := 0; i < 3; i++ {
		got := rc.request(i).header
		at := start.Add(time.Duration(i) * time.Second)
		if id := got.Get("Webhook-Id"); id != d["id"] {
			t.Errorf("attempt %d: webhook-id %q, want the delivery's id %v on every attempt", i+1, id, d["id"])
		}
		if ts := got.Get("Webhook-Timestamp"); ts != strconv.FormatInt(at.Unix(), 10) {
			t.Errorf("attempt %d: webhook-timestamp %s, want %d (its own time)", i+1, ts, at.Unix())
		}
		entry := log[i].(map[string]any)
		if entry["at"] != at.Format(apiTime) || entry["statusCode"] != 500.0 || entry["responseBody"] != "boom "+strconv.Itoa(i+1) {
			t.Errorf("attempt log entry %d: %v, want a 500 at %s", i+1, entry, at.Format(apiTime))
		}
	}

	// Nothing more before the clock reaches the durable retry. A sentinel event to another
	// subscription, ingested and delivered after the round, proves the dispatcher has looked
	// for due work since, at a time before the retry was due; a retry taken early would have
	// gone out with it.
	expect(t, e.post(t, `{"id": "sentinel", "type": "transaction.state.updated"}`), 202)
	eventually(t, "the sentinel succeeded", func() bool { return e.deliveryStatus(t, "sentinel") == "succeeded" })
	if rc.count() != 3 {
		t.Fatalf("%d attempts before the clock reached the durable retry", rc.count())
	}
	if d := e.deliveryOf(t, "r1"); d["attempts"] != 3.0 || d["status"] != "pending" || len(attemptsMatchLog(t, d)) != 3 {
		t.Fatalf("before the durable retry is due: %v", d)
	}

	e.clock.Set(start.Add(7 * time.Second))
	eventually(t, "the durable retry succeeds", func() bool { return e.deliveryStatus(t, "r1") == "succeeded" })
	d = e.deliveryOf(t, "r1")
	log = attemptsMatchLog(t, d)
	if d["attempts"] != 5.0 || len(log) != 5 {
		t.Fatalf("attempts %v, log %d", d["attempts"], len(log))
	}
	first := log[0].(map[string]any)
	if first["statusCode"] != 500.0 || first["responseBody"] != "boom 1" || first["at"] != "2026-03-04T05:06:07.891Z" {
		t.Fatalf("first attempt %v", first)
	}
	if last := log[4].(map[string]any); last["statusCode"] != 204.0 || last["at"] != "2026-03-04T05:06:14.891Z" {
		t.Fatalf("last attempt %v", last)
	}
	for i := 3; i < 5; i++ {
		if got := rc.request(i).header; got.Get("Webhook-Id") != d["id"] || got.Get("Webhook-Timestamp") != strconv.FormatInt(start.Add(7*time.Second).Unix(), 10) {
			t.Fatalf("durable retry, attempt %d: webhook-id %q, webhook-timestamp %q", i+1, got.Get("Webhook-Id"), got.Get("Webhook-Timestamp"))
		}
	}
}

func TestScheduleExhaustedFailsAndRetryAPI(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 0
		c.Delivery.Schedule = []time.Duration{time.Minute}
	})
	healthy := false
	var mu sync.Mutex
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if healthy {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
	})
	e.subscribe(t, rc.URL, "")
	e.post(t, `{"id": "x1", "type": "task.state.updated"}`)
	eventually(t, "first attempt", func() bool { return e.deliveryOf(t, "x1")["attempts"] == 1.0 })
	e.clock.Set(start.Add(time.Minute))
	eventually(t, "failed for good", func() bool { return e.deliveryStatus(t, "x1") == "failed" })
	d := e.deliveryOf(t, "x1")
	if d["attempts"] != 2.0 || d["nextAttemptAt"] != nil || d["finishedAt"] == nil {
		t.Fatalf("failed delivery %v", d)
	}
	mu.Lock()
	healthy = true
	mu.Unlock()
	r := e.do("POST", "/v1/deliveries/"+d["id"].(string)+"/retry", nil)
	expect(t, r, http.StatusAccepted)
	eventually(t, "retried delivery succeeds", func() bool { return e.deliveryStatus(t, "x1") == "succeeded" })
	expectProblem(t, e.do("POST", "/v1/deliveries/nope/retry", nil), 404)
	if rc.count() != 3 {
		t.Fatalf("%d requests, want 3", rc.count())
	}
}

func TestErrorStateDeactivationAndReactivation(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 1
		c.Delivery.ErrorStateAfter = 3
		c.Delivery.DisableAfter = time.Hour
		c.Delivery.Schedule = []time.Duration{time.Minute, time.Hour, time.Hour}
	})
	var mu sync.Mutex
	code := http.StatusInternalServerError
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(code)
	})
	id := e.subscribe(t, rc.URL, "")
	e.post(t, `{"id": "s1", "type": "task.state.updated"}`)
	eventually(t, "first round", func() bool { return e.deliveryOf(t, "s1")["attempts"] == 2.0 })
	if w := e.do("GET", "/v1/webhooks/"+id, nil).json(t); w["isInErrorState"] != false {
		t.Fatalf("error state after 2 failed attempts: %v", w)
	}
	e.clock.Set(start.Add(time.Minute))
	eventually(t, "second round", func() bool { return e.deliveryOf(t, "s1")["attempts"] == 4.0 })
	w := e.do("GET", "/api/WebhookRegistrations/"+id, nil).json(t)
	if w["isInErrorState"] != true || w["errorStateReason"] != "HTTP 500 from target" ||
		w["detectedErrorStateAt"] != "2026-03-04T05:07:07.891Z" || w["isActive"] != true {
		t.Fatalf("after 4 failed attempts: %v", w)
	}

	// Still failing an hour after the error state began: deactivated.
	e.clock.Set(start.Add(time.Minute + time.Hour))
	eventually(t, "deactivated", func() bool {
		return e.do("GET", "/v1/webhooks/"+id, nil).json(t)["isActive"] == false
	})
	w = e.do("GET", "/api/WebhookRegistrations/"+id, nil).json(t)
	if w["deactivatedAt"] != "2026-03-04T06:07:07.891Z" {
		t.Fatalf("deactivatedAt %v", w["deactivatedAt"])
	}
	if got := e.post(t, `{"id": "s2", "type": "task.state.updated"}`).json(t); got["deliveries"] != 0.0 {
		t.Fatalf("a deactivated subscription got a delivery: %v", got)
	}

	// Reactivated, it receives again, and a success clears the error state.
	mu.Lock()
	code = http.StatusOK
	mu.Unlock()
	r := e.do("POST", "/v1/webhooks/"+id+"/reactivate", nil)
	expect(t, r, 200)
	if w := r.json(t); w["isActive"] != true || w["isInErrorState"] != false || w["deactivatedAt"] != nil {
		t.Fatalf("after reactivate: %v", w)
	}
	before := rc.count()
	e.post(t, `{"id": "s3", "type": "task.state.updated"}`)
	eventually(t, "delivered after reactivation", func() bool { return e.deliveryStatus(t, "s3") == "succeeded" })
	if rc.count() <= before {
		t.Fatal("nothing reached the target after reactivation")
	}
	expectProblem(t, e.do("POST", "/v1/webhooks/nope/reactivate", nil), 404)
}

func TestGoneDeactivatesAtOnce(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 3 })
	rc := newReceiver(t, status(http.StatusGone))
	id := e.subscribe(t, rc.URL, "")
	e.post(t, `{"id": "g1", "type": "task.state.updated"}`)
	eventually(t, "failed", func() bool { return e.deliveryStatus(t, "g1") == "failed" })
	if rc.count() != 1 {
		t.Fatalf("410 was retried: %d attempts", rc.count())
	}
	if w := e.do("GET", "/v1/webhooks/"+id, nil).json(t); w["isActive"] != false || w["deactivatedAt"] == nil {
		t.Fatalf("after 410: %v", w)
	}
}

func TestRetryAfter(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 2
		c.Delivery.Schedule = []time.Duration{5 * time.Second}
	})
	// A long Retry-After ends the quick retries and sets the durable wait, capped at twice
	// the scheduled one (10s, not 120s).
	long := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	e.subscribe(t, long.URL, "")
	e.post(t, `{"id": "ra1", "type": "task.state.updated"}`)
	eventually(t, "first round", func() bool { return e.deliveryOf(t, "ra1")["attempts"] == 1.0 })
	if d := e.deliveryOf(t, "ra1"); d["nextAttemptAt"] != "2026-03-04T05:06:17.891Z" {
		t.Fatalf("next attempt %v, want 10s later", d["nextAttemptAt"])
	}
}

func TestRetryAfterShortIsHonouredInProcess(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 2 })
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(200)
	})
	e.subscribe(t, rc.URL, "")
	e.post(t, `{"id": "ra2", "type": "task.state.updated"}`)
	eventually(t, "succeeded after a quick retry", func() bool { return e.deliveryStatus(t, "ra2") == "succeeded" })
	if d := e.deliveryOf(t, "ra2"); d["attempts"] != 2.0 {
		t.Fatalf("attempts %v", d["attempts"])
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) { c.Delivery.QuickRetries = 0 })
	elsewhere := newReceiver(t, nil)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL, http.StatusFound)
	})
	e.subscribe(t, rc.URL, "")
	e.post(t, `{"id": "rd", "type": "task.state.updated"}`)
	eventually(t, "attempted", func() bool { return e.deliveryOf(t, "rd")["attempts"] == 1.0 })
	if elsewhere.count() != 0 {
		t.Fatal("the redirect was followed")
	}
	d := e.deliveryOf(t, "rd")
	if d["lastStatusCode"] != 302.0 || d["status"] != "pending" {
		t.Fatalf("redirect outcome %v", d)
	}
}

func TestTimeoutAndResetAreFailures(t *testing.T) {
	e := engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 0
		c.Delivery.Timeout = 100 * time.Millisecond
	})
	release := make(chan struct{})
	hang := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	reset := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	e.subscribe(t, hang.URL, `, "events": ["task.state.updated"]`)
	e.subscribe(t, reset.URL, `, "events": ["transaction.state.updated"]`)
	e.post(t, `[{"id": "slow", "type": "task.state.updated"}, {"id": "rst", "type": "transaction.state.updated"}]`)
	eventually(t, "both attempted", func() bool {
		return e.deliveryOf(t, "slow")["attempts"] == 1.0 && e.deliveryOf(t, "rst")["attempts"] == 1.0
	})
	for id, want := range map[string]string{"slow": "timeout", "rst": "connection reset"} {
		d := e.deliveryOf(t, id)
		if msg, _ := d["lastError"].(string); !strings.Contains(msg, want) || d["lastStatusCode"] != nil {
			t.Errorf("%s: lastError %q, status %v; want %q", id, msg, d["lastStatusCode"], want)
		}
	}
}

// A target that hangs holds at most its share of the workers; others are delivered meanwhile.
func TestSlowSubscriberDoesNotStallOthers(t *testing.T) {
	e := newEnvWith(t, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowPrivateNetworks = true
		c.Delivery.Timeout = 30 * time.Second
		c.Delivery.MaxInFlight, c.Delivery.MaxInFlightPerSubscription = 8, 2
	}, func(o *gatewayOptions) {
		o.PollInterval = 5 * time.Millisecond
	})
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	slow := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	fast := newReceiver(t, nil)
	e.subscribe(t, slow.URL, `, "events": ["task.state.updated"]`)
	e.subscribe(t, fast.URL, `, "events": ["transaction.state.updated"]`)
	var batch []string
	for i := 0; i < 20; i++ {
		batch = append(batch, fmt.Sprintf(`{"id": "s%d", "type": "task.state.updated"}`, i))
	}
	expect(t, e.post(t, "["+strings.Join(batch, ",")+"]"), 202)
	eventually(t, "the slow target holds its two slots", func() bool { return slow.count() == 2 })
	batch = batch[:0]
	for i := 0; i < 50; i++ {
		batch = append(batch, fmt.Sprintf(`{"id": "f%d", "type": "transaction.state.updated"}`, i))
	}
	expect(t, e.post(t, "["+strings.Join(batch, ",")+"]"), 202)
	eventually(t, "the fast target got all 50 while the slow one hangs", func() bool { return fast.count() == 50 })
	if n := slow.count(); n != 2 {
		t.Fatalf("the slow target had %d attempts in flight, want at most 2", n)
	}
	free()
	eventually(t, "the slow target's backlog drains", func() bool { return slow.count() == 20 })
}

func TestDeliveryListing(t *testing.T) {
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	id := e.subscribe(t, rc.URL, "")
	for i := 0; i < 3; i++ {
		e.clock.Set(start.Add(time.Duration(i) * time.Second))
		e.post(t, fmt.Sprintf(`{"id": "l%d", "type": "task.state.updated"}`, i))
	}
	eventually(t, "all delivered", func() bool {
		return len(e.do("GET", "/v1/webhooks/"+id+"/deliveries?status=succeeded", nil).list(t)) == 3
	})
	l := e.do("GET", "/v1/webhooks/"+id+"/deliveries?limit=2", nil)
	page := l.list(t)
	if len(page) != 2 || page[0]["eventId"] != "l2" || page[1]["eventId"] != "l1" || l.header.Get("Link") == "" {
		t.Fatalf("newest first, 2 a page: %v (Link %q)", page, l.header.Get("Link"))
	}
	if n := len(e.do("GET", "/v1/webhooks/"+id+"/deliveries?status=failed", nil).list(t)); n != 0 {
		t.Fatalf("%d failed", n)
	}
	expectProblem(t, e.do("GET", "/v1/webhooks/"+id+"/deliveries?status=bogus", nil), 400, "status")
	expectProblem(t, e.do("GET", "/v1/webhooks/nope/deliveries", nil), 404)
	expectProblem(t, e.do("GET", "/v1/deliveries/nope", nil), 404)
	expectProblem(t, e.do("GET", "/v1/events/nope", nil), 404)
	expectProblem(t, e.doAs("", "GET", "/v1/events/l1", nil), 401)
}

// On shutdown a round in flight is let finish and its outcome recorded before Serve returns.
func TestShutdownLetsRoundsInFlightFinish(t *testing.T) {
	e := engineEnv(t, nil)
	entered := make(chan struct{}, 1)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	})
	e.subscribe(t, rc.URL, "")
	expect(t, e.post(t, `{"id": "inflight", "type": "task.state.updated"}`), 202)
	<-entered
	if err := e.shutdown(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	_, ds, err := e.store.GetEvent(context.Background(), "inflight")
	if err != nil || len(ds) != 1 {
		t.Fatalf("deliveries %v, err %v", ds, err)
	}
	if ds[0].Status != "succeeded" || ds[0].Attempts != 1 {
		t.Fatalf("after shutdown the delivery is %s with %d attempts, want succeeded with 1", ds[0].Status, ds[0].Attempts)
	}
}
