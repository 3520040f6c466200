package gateway_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// opsEnv delivers with no quick retry and no durable one: a failed attempt fails its delivery
// for good, at once.
func opsEnv(t *testing.T) *env {
	return engineEnv(t, func(c *config.Config) {
		c.Delivery.QuickRetries = 0
		c.Delivery.Schedule = nil
	})
}

// switchable answers 500 until ok is set, then 200.
func switchable(ok *atomic.Bool) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) {
		if ok.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	}
}

// statusOf returns the status of the delivery of eventID to sub, as the store has it.
func (e *env) statusOf(t *testing.T, eventID, sub string) string {
	t.Helper()
	for _, d := range e.eventDeliveries(t, eventID) {
		if d["subscriptionId"] == sub {
			return d["status"].(string)
		}
	}
	t.Fatalf("event %s has no delivery to %s", eventID, sub)
	return ""
}

// eventIDs names a list's deliveries by their events, in order.
func eventIDs(l []map[string]any) string {
	var ids []string
	for _, d := range l {
		ids = append(ids, d["eventId"].(string))
	}
	return strings.Join(ids, " ")
}

func TestListDeliveriesAcrossSubscriptions(t *testing.T) {
	e := opsEnv(t)
	good, bad := newReceiver(t, nil), newReceiver(t, status(500))
	a := e.subscribe(t, good.URL, `, "events": ["transaction.state.updated"]`)
	b := e.subscribe(t, bad.URL, "")
	for i, ev := range []string{`{"id": "t1", "type": "transaction.state.updated"}`,
		`{"id": "k1", "type": "task.state.updated"}`, `{"id": "t2", "type": "transaction.state.updated"}`} {
		e.clock.Set(start.Add(time.Duration(i) * time.Minute))
		expect(t, e.post(t, ev), http.StatusAccepted)
	}
	eventually(t, "every delivery finished", func() bool {
		return len(e.do("GET", "/v1/deliveries?status=pending", nil).list(t)) == 0
	})
	list := func(query string) []map[string]any {
		t.Helper()
		r := e.do("GET", "/v1/deliveries"+query, nil)
		expect(t, r, http.StatusOK)
		return r.list(t)
	}
	all := list("")
	if got := eventIDs(all); got != "t2 t2 k1 t1 t1" {
		t.Fatalf("every delivery, newest first: %s", got)
	}
	at := func(d time.Duration) string { return url.QueryEscape(start.Add(d).Format(time.RFC3339)) }
	for _, tc := range []struct{ query, want string }{
		{"?status=failed", "t2 k1 t1"},
		{"?status=succeeded&subscription=" + a, "t2 t1"},
		{"?subscription=" + b + "&event_type=task.state.updated", "k1"},
		{"?event_type=transaction.state.updated&status=failed", "t2 t1"},
		{"?subscription=deleted-or-unknown", ""},
		// since is inclusive, until exclusive.
		{"?since=" + at(time.Minute), "t2 t2 k1"},
		{"?until=" + at(time.Minute), "t1 t1"},
		{"?since=" + at(time.Minute) + "&until=" + at(2*time.Minute), "k1"},
		// An offset's + that the query decoded to a space still reads.
		{"?since=" + strings.ReplaceAll(start.Add(time.Minute).Format("2006-01-02T15:04:05-07:00"), "+", "%2B") + "&status=succeeded", "t2"},
		{"?since=2026-03-04T05:07:07.891+00:00", "t2 t2 k1"},
		// Durations count back from now (start+2m).
		{"?since=90s", "t2 t2 k1"},
		{"?since=1d&until=30s", "k1 t1 t1"},
	} {
		if got := eventIDs(list(tc.query)); got != tc.want {
			t.Errorf("GET /v1/deliveries%s: %q, want %q", tc.query, got, tc.want)
		}
	}

	// Pages of 2, following the Link header: the same deliveries, and a relative since
	// resolved once.
	var paged []map[string]any
	next := "/v1/deliveries?since=1d&limit=2"
	for next != "" {
		r := e.do("GET", next, nil)
		expect(t, r, http.StatusOK)
		paged = append(paged, r.list(t)...)
		next = ""
		if link := r.header.Get("Link"); link != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
			if !strings.Contains(next, "since=2026-03-03T05%3A08%3A07.891Z") || !strings.Contains(next, "limit=2") {
				t.Fatalf("Link %q", link)
			}
			e.clock.Set(e.clock.Now().Add(time.Hour)) // the window does not move
		}
	}
	if eventIDs(paged) != eventIDs(all) {
		t.Fatalf("pages of 2: %s, want %s", eventIDs(paged), eventIDs(all))
	}

	for _, tc := range []struct {
		query  string
		fields []string
	}{
		{"?status=bogus", []string{"status"}},
		{"?since=yesterday", []string{"since"}},
		{"?until=-2h", []string{"until"}},
		{"?since=2026-13-01T00:00:00Z", []string{"since"}},
		{"?since=" + at(time.Minute) + "&until=" + at(time.Minute), []string{"until"}},
		{"?event_type=nope", []string{"event_type"}},
		{"?limit=0&status=x&since=1y", []string{"limit", "status", "since"}},
		{"?after=missing", []string{"after"}},
	} {
		expectProblem(t, e.do("GET", "/v1/deliveries"+tc.query, nil), http.StatusBadRequest, tc.fields...)
	}
	expectProblem(t, e.doAs("", "GET", "/v1/deliveries", nil), http.StatusUnauthorized)
}

func TestRecoverRedeliversAFailedWindowOnly(t *testing.T) {
	e := opsEnv(t)
	var ok, otherOK atomic.Bool
	rc, other := newReceiver(t, switchable(&ok)), newReceiver(t, switchable(&otherOK))
	sub := e.subscribe(t, rc.URL, "")
	o := e.subscribe(t, other.URL, "")
	for i := range 4 {
		e.clock.Set(start.Add(time.Duration(i) * time.Minute))
		expect(t, e.post(t, `{"id": "e`+strconv.Itoa(i+1)+`", "type": "task.state.updated"}`), http.StatusAccepted)
	}
	for i := 1; i <= 4; i++ {
		id := "e" + strconv.Itoa(i)
		eventually(t, id+" failed", func() bool { return e.statusOf(t, id, sub) == "failed" && e.statusOf(t, id, o) == "failed" })
	}
	ok.Store(true)
	e.clock.Set(start.Add(time.Hour))

	// Bad requests change nothing.
	path := "/v1/webhooks/" + sub + "/recover"
	for _, tc := range []struct {
		body   string
		fields []string
	}{
		{`{}`, []string{"since"}},
		{`{"until": "1m"}`, []string{"since"}},
		{`{"since": ""}`, []string{"since"}},
		{`{"since": "soon"}`, []string{"since"}},
		{`{"since": "1h", "until": "2h"}`, []string{"until"}},
		{`{"since": "1h", "by": "me"}`, []string{"by"}},
		{`{"since": 5}`, []string{"since"}},
		{`{"since": "1h"} {}`, nil},
		{``, nil},
	} {
		expectProblem(t, e.do("POST", path, tc.body), http.StatusBadRequest, tc.fields...)
	}
	expectProblem(t, e.do("POST", "/v1/webhooks/nope/recover", `{"since": "1d"}`), http.StatusNotFound)

	// [start+1m, start+3m): e2 and e3, and nothing of the other subscription's.
	window := `{"since": "` + start.Add(time.Minute).Format(time.RFC3339Nano) + `", "until": "` + start.Add(3*time.Minute).Format(time.RFC3339Nano) + `"}`
	r := e.do("POST", path, window)
	expect(t, r, http.StatusAccepted)
	if got := r.json(t); got["recovered"] != 2.0 || got["since"] != "2026-03-04T05:07:07.891Z" || got["until"] != "2026-03-04T05:09:07.891Z" {
		t.Fatalf("recovery answered %s", r.body)
	}
	// Again at once: they are pending or done, no longer failed.
	if r := e.do("POST", path, window); r.status != http.StatusAccepted || r.json(t)["recovered"] != 0.0 {
		t.Fatalf("a repeated recovery: %d %s", r.status, r.body)
	}
	for _, id := range []string{"e2", "e3"} {
		eventually(t, id+" redelivered", func() bool { return e.statusOf(t, id, sub) == "succeeded" })
	}
	for _, id := range []string{"e1", "e4"} {
		if s := e.statusOf(t, id, sub); s != "failed" {
			t.Fatalf("%s, outside the window, is %s", id, s)
		}
	}
	for i := 1; i <= 4; i++ {
		if s := e.statusOf(t, "e"+strconv.Itoa(i), o); s != "failed" {
			t.Fatalf("the other subscription's e%d is %s", i, s)
		}
	}
	if rc.count() != 6 || other.count() != 4 {
		t.Fatalf("%d and %d requests, want 4+2 and 4", rc.count(), other.count())
	}
	// A recovered delivery keeps its webhook-id: a recovery is a retry.
	sent := map[string]bool{}
	for i := range 4 {
		sent[rc.request(i).header.Get("Webhook-Id")] = true
	}
	for i := 4; i < 6; i++ {
		if id := rc.request(i).header.Get("Webhook-Id"); !sent[id] {
			t.Fatalf("a recovered delivery went out with a new webhook-id %q", id)
		}
	}

	// An inactive subscription's recovered deliveries wait, paused, for its reactivation; the
	// dialect-2 path and a relative since work the same.
	expect(t, e.do("DELETE", "/api/WebhookRegistrations/"+o, nil), http.StatusOK)
	r = e.do("POST", "/api/WebhookRegistrations/"+o+"/recover", `{"since": "2h"}`)
	if r.status != http.StatusAccepted || r.json(t)["recovered"] != 4.0 || r.json(t)["until"] != nil {
		t.Fatalf("recovery of the inactive subscription: %d %s", r.status, r.body)
	}
	ds, err := e.store.ListDeliveries(t.Context(), store.DeliveryFilter{SubscriptionID: o}, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Status != store.Pending || d.Attempts != 1 {
			t.Fatalf("recovered while inactive: %s %s, %d attempts", d.EventID, d.Status, d.Attempts)
		}
	}
	st, err := e.store.Stats(t.Context(), e.clock.Now())
	if err != nil || st.Pending != 0 {
		t.Fatalf("paused deliveries are queued: %+v (%v)", st, err)
	}
	otherOK.Store(true)
	expect(t, e.do("POST", "/id-scan/v1/webhooks/"+o+"/reactivate", nil), http.StatusOK)
	eventually(t, "delivered once reactivated", func() bool {
		return len(e.do("GET", "/v1/deliveries?status=succeeded&subscription="+o, nil).list(t)) == 4
	})
	if other.count() != 8 {
		t.Fatalf("the other target got %d requests, want 8", other.count())
	}
}

func TestReplayIsANewMessage(t *testing.T) {
	e := opsEnv(t)
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	rc := newReceiver(t, nil)
	a := e.subscribe(t, rc.URL, `, "plugins": [{"name": "hmac", "config": {"secret": "`+secret+`"}}]`)
	tasks := e.subscribe(t, rc.URL, `, "events": ["task.state.updated"]`)
	inactive := e.subscribe(t, rc.URL, "")
	expect(t, e.do("DELETE", "/api/WebhookRegistrations/"+inactive, nil), http.StatusOK)
	body := `{"id": "ev1", "type": "transaction.state.updated", "transaction": {"id": "t", "state": "completed"}}`
	expect(t, e.post(t, body), http.StatusAccepted)
	eventually(t, "delivered", func() bool { return e.statusOf(t, "ev1", a) == "succeeded" })
	first := rc.request(0).header.Get("Webhook-Id")

	for _, tc := range []struct {
		path, body string
		status     int
		fields     []string
	}{
		{"/v1/events/nope/replay", `{"subscription": "` + a + `"}`, http.StatusNotFound, nil},
		{"/v1/events/ev1/replay", `{"subscription": "nope"}`, http.StatusNotFound, nil},
		{"/v1/events/ev1/replay", `{"subscription": "` + tasks + `"}`, http.StatusConflict, nil},
		{"/v1/events/ev1/replay", `{"subscription": "` + inactive + `"}`, http.StatusConflict, nil},
		{"/v1/events/ev1/replay", `{}`, http.StatusBadRequest, []string{"subscription"}},
		{"/v1/events/ev1/replay", `{"subscription": " "}`, http.StatusBadRequest, []string{"subscription"}},
		{"/v1/events/ev1/replay", `{"subscription": ["x"]}`, http.StatusBadRequest, []string{"subscription"}},
		{"/v1/events/ev1/replay", `{"subscription": "x", "to": "y"}`, http.StatusBadRequest, []string{"to"}},
		{"/v1/events/ev1/replay", `nope`, http.StatusBadRequest, nil},
	} {
		expectProblem(t, e.do("POST", tc.path, tc.body), tc.status, tc.fields...)
	}
	if n := len(e.eventDeliveries(t, "ev1")); n != 1 {
		t.Fatalf("refused replays made deliveries: ev1 has %d", n)
	}

	e.clock.Set(start.Add(time.Hour))
	r := e.do("POST", "/v1/events/ev1/replay", `{"subscription": "`+a+`"}`)
	expect(t, r, http.StatusAccepted)
	d := r.json(t)
	id := d["id"].(string)
	if id == first || d["eventId"] != "ev1" || d["subscriptionId"] != a || d["status"] != "pending" ||
		d["createdAt"] != "2026-03-04T06:06:07.891Z" || r.header.Get("Location") != "/v1/deliveries/"+id {
		t.Fatalf("replay answered %s (Location %q)", r.body, r.header.Get("Location"))
	}
	eventually(t, "replayed", func() bool { return rc.count() == 2 })
	got := rc.request(1)
	if got.header.Get("Webhook-Id") != id || string(got.body) != string(rc.request(0).body) {
		t.Fatalf("the replay went out as %q with %s", got.header.Get("Webhook-Id"), got.body)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.VerifyIgnoringTimestamp(got.body, got.header); err != nil {
		t.Fatalf("the replay's signature: %v", err)
	}
	eventually(t, "the replay succeeded", func() bool {
		r := e.do("GET", "/v1/deliveries/"+id, nil)
		return r.status == http.StatusOK && r.json(t)["status"] == "succeeded"
	})
	if n := len(e.eventDeliveries(t, "ev1")); n != 2 {
		t.Fatalf("ev1 has %d deliveries, want 2", n)
	}
	if l := e.subscriptionDeliveries(t, a); len(l) != 2 || l[0]["id"] != id {
		t.Fatalf("the subscription's deliveries, newest first: %v", l)
	}
}

func TestTestEventIsSignedAndNotStored(t *testing.T) {
	e := opsEnv(t)
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var answer atomic.Int64
	answer.Store(200)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(answer.Load()))
		w.Write([]byte("you sent " + r.Header.Get("Authorization")))
	})
	sub := e.subscribe(t, rc.URL+"/hooks", `, "events": ["task.state.updated", "transaction.state.updated"],
		"plugins": [{"name": "bearer", "config": {"token": "s3cret-t0ken"}}, {"name": "hmac", "config": {"secret": "`+secret+`"}}]`)
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}

	r := e.do("POST", "/v1/webhooks/"+sub+"/test", nil)
	expect(t, r, http.StatusOK)
	v := r.json(t)
	if rc.count() != 1 {
		t.Fatalf("the target got %d requests, want 1", rc.count())
	}
	got := rc.request(0)
	if err := wh.VerifyIgnoringTimestamp(got.body, got.header); err != nil {
		t.Fatalf("the test event's signature: %v", err)
	}
	if got.header.Get("Webhook-Timestamp") != strconv.FormatInt(start.Unix(), 10) || got.header.Get("Authorization") != "Bearer s3cret-t0ken" {
		t.Fatalf("headers %v", got.header)
	}
	payload := v["payload"].(map[string]any)
	if v["statusCode"] != 200.0 || v["error"] != nil || v["eventType"] != "task.state.updated" ||
		v["webhookId"] != got.header.Get("Webhook-Id") || !strings.HasPrefix(v["webhookId"].(string), "test_") ||
		v["responseBody"] != "you sent [REDACTED]" || v["durationMs"] == nil {
		t.Fatalf("test answered %s", r.body)
	}
	if !strings.HasPrefix(payload["id"].(string), "test_") || payload["type"] != "task.state.updated" ||
		payload["created"] != "2026-03-04T05:06:07+00:00" || payload["task"].(map[string]any)["state"] != "completed" {
		t.Fatalf("sample payload %s", got.body)
	}
	if !strings.Contains(string(r.body), string(got.body)) {
		t.Fatalf("the answer's payload is not what was sent:\n%s\n%s", r.body, got.body)
	}

	// A failing target is the attempt's result, still a 200; the alias eventType names the type.
	answer.Store(503)
	r = e.do("POST", "/id-scan/v1/webhooks/"+sub+"/test", `{"eventType": "transaction.state.updated"}`)
	expect(t, r, http.StatusOK)
	if v := r.json(t); v["statusCode"] != 503.0 || v["eventType"] != "transaction.state.updated" ||
		v["payload"].(map[string]any)["transaction"].(map[string]any)["resultId"] == nil {
		t.Fatalf("test of a failing target answered %s", r.body)
	}
	if rc.count() != 2 {
		t.Fatalf("the target got %d requests, want 2 (no retry)", rc.count())
	}

	// Nothing is stored, and the subscription's state is left alone.
	if l := e.do("GET", "/v1/deliveries", nil).list(t); len(l) != 0 {
		t.Fatalf("a test stored deliveries: %v", l)
	}
	expectProblem(t, e.do("GET", "/v1/events/"+payload["id"].(string), nil), http.StatusNotFound)
	if w := e.do("GET", "/v1/webhooks/"+sub, nil).json(t); w["isInErrorState"] != false {
		t.Fatalf("a test changed the subscription: %v", w)
	}

	// An inactive registration can be tested (before it is reactivated), with its Basic auth
	// and, by default, the first configured type.
	reg := e.do("POST", "/api/WebhookRegistrations", `{"requestId": "r", "callBackUrl": "`+rc.URL+`", "callBackUserName": "u",
		"callBackPassword": "pw-secret", "sourceSenderId": "s"}`)
	expect(t, reg, http.StatusCreated)
	regID := reg.json(t)["registrationId"].(string)
	expect(t, e.do("DELETE", "/api/WebhookRegistrations/"+regID, nil), http.StatusOK)
	answer.Store(200)
	r = e.do("POST", "/api/WebhookRegistrations/"+regID+"/test", `{}`)
	expect(t, r, http.StatusOK)
	if v := r.json(t); v["statusCode"] != 200.0 || v["eventType"] != "transaction.state.updated" || v["responseBody"] != "you sent [REDACTED]" {
		t.Fatalf("test of a registration answered %s", r.body)
	}
	if u, p, ok := (&http.Request{Header: rc.request(2).header}).BasicAuth(); !ok || u != "u" || p != "pw-secret" {
		t.Fatalf("the registration's test went without its Basic auth: %v", rc.request(2).header)
	}

	// A target that refuses the connection: the attempt's error.
	rc.Close()
	r = e.do("POST", "/v1/webhooks/"+sub+"/test", nil)
	expect(t, r, http.StatusOK)
	if v := r.json(t); v["statusCode"] != nil || v["error"] != "connection refused" {
		t.Fatalf("test of a closed target answered %s", r.body)
	}

	for _, tc := range []struct {
		path, body string
		status     int
		fields     []string
	}{
		{"/v1/webhooks/nope/test", ``, http.StatusNotFound, nil},
		{"/v1/webhooks/" + sub + "/test", `{"type": "nope"}`, http.StatusBadRequest, []string{"type"}},
		{"/v1/webhooks/" + sub + "/test", `{"type": ""}`, http.StatusBadRequest, []string{"type"}},
		{"/v1/webhooks/" + sub + "/test", `{"type": "task.state.updated", "eventType": "transaction.state.updated"}`, http.StatusBadRequest, []string{"eventType"}},
		{"/v1/webhooks/" + sub + "/test", `{"kind": "x"}`, http.StatusBadRequest, []string{"kind"}},
		{"/v1/webhooks/" + sub + "/test", `[]`, http.StatusBadRequest, nil},
	} {
		expectProblem(t, e.do("POST", tc.path, tc.body), tc.status, tc.fields...)
	}
	only := e.subscribe(t, "http://127.0.0.1:1/", `, "events": ["task.state.updated"]`)
	expectProblem(t, e.do("POST", "/v1/webhooks/"+only+"/test", `{"type": "transaction.state.updated"}`), http.StatusBadRequest, "type")
}
