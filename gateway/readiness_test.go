package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/sqlite"
)

// bigEvent is an event that needs new pages in the database: refused while it is full.
func bigEvent(id string) string {
	return `{"id": "` + id + `", "type": "task.state.updated", "pad": "` + strings.Repeat("x", 64<<10) + `"}`
}

// With the disk full (SQLite's max_page_count at the database's size: its writes fail with
// SQLITE_FULL), ingest answers 503 with Retry-After and stores nothing, /readyz answers 503
// naming the cause, reads still work; with room again, /readyz is 200 and ingest stores and
// delivers.
func TestFullDiskMakesIngestAndReadinessRefuse(t *testing.T) {
	ctx := context.Background()
	e := engineEnv(t, nil)
	rc := newReceiver(t, nil)
	e.subscribe(t, rc.URL, "")
	expect(t, e.doAs("", "GET", "/readyz", nil), http.StatusOK)

	st := e.store.(*sqlite.Store)
	if _, err := st.SetMaxPageCount(ctx, 1); err != nil {
		t.Fatal(err)
	}
	r := e.post(t, bigEvent("full-1"))
	expectProblem(t, r, http.StatusServiceUnavailable)
	if ra := r.header.Get("Retry-After"); ra != "5" {
		t.Fatalf("Retry-After %q, want 5", ra)
	}
	if _, _, err := e.store.GetEvent(ctx, "full-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an event answered 503 was stored: %v", err)
	}
	p := expectProblem(t, e.doAs("", "GET", "/readyz", nil), http.StatusServiceUnavailable)
	if d, _ := p["detail"].(string); !strings.Contains(d, "the store cannot write") || !strings.Contains(d, "database or disk is full") {
		t.Fatalf("readyz with the disk full: %q", d)
	}
	// Every call says so while the disk stays full: the ones that probe and the ones between.
	for range 3 {
		expectProblem(t, e.doAs("", "GET", "/readyz", nil), http.StatusServiceUnavailable)
	}
	expect(t, e.do("GET", "/v1/webhooks", nil), http.StatusOK) // reads go on

	if _, err := st.SetMaxPageCount(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready with room again", func() bool { return e.doAs("", "GET", "/readyz", nil).status == http.StatusOK })
	expect(t, e.post(t, bigEvent("full-1")), http.StatusAccepted)
	eventually(t, "delivered", func() bool { return e.deliveryStatus(t, "full-1") == "succeeded" })
}

// fullAtStart is the store of a gateway started on a full disk: while full is set,
// RecoverLeases fails as it would there, with SQLITE_FULL from a real write that SQLite
// refuses for want of room (recovery itself only shrinks rows, which max_page_count cannot
// refuse).
type fullAtStart struct {
	*sqlite.Store
	full atomic.Bool
}

func (s *fullAtStart) RecoverLeases(ctx context.Context) error {
	if !s.full.Load() {
		return s.Store.RecoverLeases(ctx)
	}
	// A type no subscription takes: should the write get through (room came back meanwhile),
	// it delivers nothing.
	big := &store.Event{ID: "probe", Type: "transaction.state.updated", Payload: []byte(bigEvent("probe")), ReceivedAt: start}
	if _, err := s.IngestEvents(ctx, []*store.Event{big}, store.IngestOptions{NewID: func() string { return "probe-delivery" }}); err != nil {
		return err
	}
	return errors.New("test: the database has room")
}

// A gateway started on a full disk does not stop at the lease recovery: it serves reads, is
// not ready and delivers nothing until a retry of the recovery succeeds; then it is ready and
// delivers, the crashed process's leased delivery included.
func TestStartOnAFullDisk(t *testing.T) {
	ctx := context.Background()
	rc := newReceiver(t, nil)
	path := filepath.Join(t.TempDir(), "gateway.db")

	// What a process killed during a round leaves: a delivery leased for an hour.
	before, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := before.CreateSubscription(ctx, &store.Subscription{ID: "sub", Kind: store.KindWebhook, Source: store.SourceAPI,
		URL: rc.URL, Events: []string{"task.state.updated"}, Active: true, CreatedAt: start, UpdatedAt: start}); err != nil {
		t.Fatal(err)
	}
	ev := &store.Event{ID: "leased", Type: "task.state.updated", Payload: []byte(`{"id":"leased","type":"task.state.updated"}`), ReceivedAt: start}
	if _, err := before.IngestEvents(ctx, []*store.Event{ev}, store.IngestOptions{NewID: func() string { return "leased-delivery" }}); err != nil {
		t.Fatal(err)
	}
	claimed, err := before.ClaimDeliveries(ctx, store.ClaimOptions{Now: start, LeaseUntil: start.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "sub", Limit: 1}}})
	if err != nil || len(claimed.Claims) != 1 {
		t.Fatalf("claim: %v, %v", claimed, err)
	}
	if err := before.Close(); err != nil {
		t.Fatal(err)
	}

	var full *fullAtStart
	e := newEnvAt(t, path, func(c *config.Config) {
		c.Security.RequireHTTPS, c.Security.AllowPrivateNetworks = false, true
	}, func(o *gatewayOptions) {
		o.PollInterval = 5 * time.Millisecond
		o.RecoveryRetryWait = 10 * time.Millisecond
		full = &fullAtStart{Store: o.Store.(*sqlite.Store)}
		full.full.Store(true)
		if _, err := full.SetMaxPageCount(ctx, 1); err != nil {
			t.Fatal(err)
		}
		o.Store = full
	})
	p := expectProblem(t, e.doAs("", "GET", "/readyz", nil), http.StatusServiceUnavailable)
	if d, _ := p["detail"].(string); !strings.Contains(d, "delivery leases could not be recovered") || !strings.Contains(d, "database or disk is full") {
		t.Fatalf("readyz while the recovery fails: %q", d)
	}
	if got := e.do("GET", "/v1/webhooks/sub", nil); got.status != http.StatusOK || !strings.Contains(string(got.body), rc.URL) {
		t.Fatalf("reads while the recovery fails: %d %s", got.status, got.body)
	}
	r := e.post(t, bigEvent("while-full"))
	expectProblem(t, r, http.StatusServiceUnavailable)

	// Room again: the next retry recovers the leases, and the gateway is ready and delivers.
	if _, err := full.SetMaxPageCount(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	full.full.Store(false)
	eventually(t, "ready once the recovery succeeds", func() bool { return e.doAs("", "GET", "/readyz", nil).status == http.StatusOK })
	eventually(t, "the leased delivery delivered", func() bool { return e.deliveryStatus(t, "leased") == "succeeded" })
	if n := rc.count(); n != 1 {
		t.Fatalf("the subscriber got %d requests, want 1", n)
	}
}
