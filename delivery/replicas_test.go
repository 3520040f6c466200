package delivery_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/delivery"
	"github.com/webhookgw/gateway/internal/pgtest"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/postgres"
)

// arrival is one request a subscriber got.
type arrival struct {
	webhookID string
	body      string
}

// runEngine runs an engine on s until the test ends, polling the store only once a minute:
// whatever it delivers sooner, a commit or a notification told it about.
func runEngine(t *testing.T, s store.Store) {
	t.Helper()
	cfg := config.Default()
	cfg.Delivery.QuickRetries = 0
	cfg.Delivery.Schedule = nil // a failed attempt fails the delivery for good
	cfg.Security.RequireHTTPS, cfg.Security.AllowPrivateNetworks = false, true
	e := delivery.New(delivery.Options{
		Store: s, Delivery: cfg.Delivery, Security: cfg.Security, Plugins: builtin.Registry(),
		PollInterval: time.Minute, Lease: cfg.Delivery.Lease, Logger: slog.New(slog.DiscardHandler),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A replica's engine hears of another replica's ingests and retries through the store's Due
// notifications, at once: its poll (a minute here) cannot explain a delivery within seconds.
func TestEngineWakesOnOtherReplicasWork(t *testing.T) {
	dsn := pgtest.Schema(t)
	ctx := context.Background()
	open := func() *postgres.Store {
		s, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()

	arrivals := make(chan arrival, 16)
	var mu sync.Mutex
	status := http.StatusInternalServerError
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		code := status
		mu.Unlock()
		w.WriteHeader(code)
		arrivals <- arrival{webhookID: r.Header.Get("Webhook-Id"), body: string(body)}
	}))
	t.Cleanup(srv.Close)
	now := time.Now().UTC()
	if err := a.CreateSubscription(ctx, &store.Subscription{ID: "s", Kind: store.KindWebhook, Source: store.SourceAPI,
		URL: srv.URL, Events: []string{store.AllEvents}, Active: true, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	// Both replicas run an engine. Replica A's stores its events without its engine (as when
	// its lane has no room) and asks for retries without waking it, so that only replica B's
	// engine, woken by the notification, can deliver them.
	runEngine(t, a)
	runEngine(t, b)
	ids := 0
	newID := func() string { ids++; return "d" + string(rune('0'+ids)) }
	ingest := func(id string) {
		t.Helper()
		_, err := a.IngestEvents(ctx, []*store.Event{{ID: id, Type: "x", Payload: []byte(`{"id":"` + id + `"}`),
			ReceivedAt: time.Now().UTC()}}, store.IngestOptions{NewID: newID})
		if err != nil {
			t.Fatal(err)
		}
	}
	wantArrival := func(what, body string) {
		t.Helper()
		started := time.Now()
		select {
		case got := <-arrivals:
			if got.body != body {
				t.Fatalf("%s: got %s, want %s", what, got.body, body)
			}
			t.Logf("%s: delivered after %v", what, time.Since(started).Round(time.Millisecond))
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: not delivered within 15s (the engines poll once a minute)", what)
		}
	}
	waitStatus := func(id string, want store.DeliveryStatus) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			d, _, err := a.GetDelivery(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if d.Status == want {
				return
			}
		}
		t.Fatalf("delivery %s not %s within 10s", id, want)
	}

	ingest("e1")
	wantArrival("the first event (answered 500)", `{"id":"e1"}`)
	waitStatus("d1", store.Failed)
	mu.Lock()
	status = http.StatusOK
	mu.Unlock()

	// The engines are idle now, long past their first look at the store.
	ingest("e2")
	wantArrival("an event ingested through replica A", `{"id":"e2"}`)
	waitStatus("d2", store.Succeeded)

	if _, err := a.RetryDelivery(ctx, "d1", time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	wantArrival("a retry asked for through replica A", `{"id":"e1"}`)
	waitStatus("d1", store.Succeeded)
}

// A subscription whose max_in_flight the store enforces (across replicas, counting leases
// until outcomes end them) drains its backlog without waiting for the poll: a claim the store
// capped is made again as the engine's own rounds end.
func TestMaxInFlightBacklogDrainsWithoutPoll(t *testing.T) {
	dsn := pgtest.Schema(t)
	ctx := context.Background()
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const n = 60
	got := make(chan struct{}, n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(time.Millisecond)
		got <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	now := time.Now().UTC()
	if err := s.CreateSubscription(ctx, &store.Subscription{ID: "s", Kind: store.KindWebhook, Source: store.SourceAPI,
		URL: srv.URL, Events: []string{store.AllEvents}, Active: true, Policy: store.Policy{MaxInFlight: 2},
		CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	var events []*store.Event
	for i := range n {
		id := "e" + strconv.Itoa(i)
		events = append(events, &store.Event{ID: id, Type: "x", Payload: []byte(`{}`), ReceivedAt: now})
	}
	ids := 0
	if _, err := s.IngestEvents(ctx, events, store.IngestOptions{NewID: func() string { ids++; return "d" + strconv.Itoa(ids) }}); err != nil {
		t.Fatal(err)
	}
	runEngine(t, s) // its first look at the store finds the backlog
	for i := range n {
		select {
		case <-got:
		case <-time.After(15 * time.Second):
			t.Fatalf("%d of %d delivered within 15s (the engine polls once a minute)", i, n)
		}
	}
}
