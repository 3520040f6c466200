package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/postgres"
	"github.com/webhookgw/gateway/store/storetest"
)

// The tests run against the PostgreSQL that GATEWAY_TEST_POSTGRES_URL names, each in a fresh
// schema of its own, dropped when the test ends.
const envURL = "GATEWAY_TEST_POSTGRES_URL"

// schema creates a fresh schema for t and returns a DSN whose connections use it.
func schema(t *testing.T) string {
	t.Helper()
	base := os.Getenv(envURL)
	if base == "" {
		t.Skipf("%s is not set: set it to a PostgreSQL URL (such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL tests", envURL)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("%s: %v", envURL, err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	name := "gwtest_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", envURL, err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func open(t *testing.T, dsn string, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, schema(t), postgres.Options{})
	}, storetest.Capabilities{SharedRateLimit: true})
}

// twoStores opens two Stores on one fresh schema, as two replicas would.
func twoStores(t *testing.T) (a, b *postgres.Store) {
	t.Helper()
	dsn := schema(t)
	a, b = open(t, dsn, postgres.Options{}), open(t, dsn, postgres.Options{})
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func subscription(id string, policy store.Policy) *store.Subscription {
	return &store.Subscription{ID: id, Kind: store.KindWebhook, Source: store.SourceAPI, URL: "https://example.com/" + id,
		Events: []string{"x"}, Active: true, Policy: policy, CreatedAt: base, UpdatedAt: base}
}

func ingest(t *testing.T, s store.Store, n int) {
	t.Helper()
	var events []*store.Event
	for i := range n {
		events = append(events, &store.Event{ID: fmt.Sprintf("e%03d", i), Type: "x", Payload: []byte("{}"),
			ReceivedAt: base.Add(time.Duration(i) * time.Millisecond)})
	}
	id := 0
	var mu sync.Mutex
	if _, err := s.IngestEvents(context.Background(), events, store.IngestOptions{NewID: func() string {
		mu.Lock()
		defer mu.Unlock()
		id++
		return fmt.Sprintf("d%04d", id)
	}}); err != nil {
		t.Fatal(err)
	}
}

// Two replicas claiming at once never hand out one delivery twice, and together never have
// more of a subscription's deliveries in flight than its max_in_flight.
func TestClaimsAcrossStores(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	if err := a.CreateSubscription(ctx, subscription("limited", store.Policy{MaxInFlight: 3})); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateSubscription(ctx, subscription("open", store.Policy{})); err != nil {
		t.Fatal(err)
	}
	ingest(t, a, 40)
	now := base.Add(time.Minute)
	opts := store.ClaimOptions{Now: now, LeaseUntil: now.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "open", Limit: 5}, {ID: "limited", Limit: 5}}}

	var (
		mu       sync.Mutex
		claimed  = map[string]int{}
		inFlight = map[string]int{}
		wg       sync.WaitGroup
		errs     = make(chan error, 8)
	)
	for i := range 8 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				res, err := s.ClaimDeliveries(ctx, opts)
				if err != nil {
					errs <- err
					return
				}
				if len(res.Claims) == 0 {
					return
				}
				mu.Lock()
				for _, c := range res.Claims {
					claimed[c.Delivery.ID]++
					inFlight[c.Delivery.SubscriptionID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for id, n := range claimed {
		if n != 1 {
			t.Errorf("%s claimed %d times", id, n)
		}
	}
	// Nothing completes, so everything claimed is in flight.
	if inFlight["open"] != 40 || inFlight["limited"] != 3 {
		t.Fatalf("in flight: open %d (want all 40), limited %d (want its max_in_flight, 3)", inFlight["open"], inFlight["limited"])
	}

	res, err := b.ClaimDeliveries(ctx, opts)
	if err != nil || len(res.Claims) != 0 {
		t.Fatalf("claim at the limit: %d claims, %v", len(res.Claims), err)
	}
	if _, ok := res.NextDue["limited"]; ok {
		t.Errorf("NextDue names limited, which its max_in_flight holds back: %v", res.NextDue)
	}
	// The leases ended: b takes one, a may take two more.
	later := now.Add(2 * time.Hour)
	res, err = b.ClaimDeliveries(ctx, store.ClaimOptions{Now: later, LeaseUntil: later.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "limited", Limit: 1}}})
	if err != nil || len(res.Claims) != 1 {
		t.Fatalf("claim after the leases ended: %d claims, %v", len(res.Claims), err)
	}
	done := res.Claims[0]
	res, err = a.ClaimDeliveries(ctx, store.ClaimOptions{Now: later, LeaseUntil: later.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "limited", Limit: 5}}})
	if err != nil || len(res.Claims) != 2 {
		t.Fatalf("claim with one in flight and max_in_flight 3: %d claims, %v; want 2", len(res.Claims), err)
	}
	if _, err := a.CompleteDeliveries(ctx, []*store.Outcome{{DeliveryID: done.Delivery.ID, SubscriptionID: "limited",
		Token: done.Token, Succeeded: true, Attempts: []store.Attempt{{At: later, StatusCode: 200}}}},
		store.ErrorPolicy{ErrorStateAfter: 3, DisableAfter: time.Hour}, later); err != nil {
		t.Fatal(err)
	}
	res, err = b.ClaimDeliveries(ctx, store.ClaimOptions{Now: later, LeaseUntil: later.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "limited", Limit: 5}}})
	if err != nil || len(res.Claims) != 1 {
		t.Fatalf("claim after a completion made room: %d claims, %v; want 1", len(res.Claims), err)
	}
}

// A fifo subscription's head is claimed by one replica only, and not while any of its
// deliveries is in flight.
func TestFIFOAcrossStores(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	if err := a.CreateSubscription(ctx, subscription("f", store.Policy{Ordering: store.FIFO})); err != nil {
		t.Fatal(err)
	}
	ingest(t, a, 5)
	now := base.Add(time.Minute)
	opts := store.ClaimOptions{Now: now, LeaseUntil: now.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "f", Limit: 10, FIFO: true}}}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for i := range 6 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.ClaimDeliveries(ctx, opts)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			total += len(res.Claims)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != 1 {
		t.Fatalf("%d claims of a fifo subscription's head at once, want 1", total)
	}
}

// Replicas that start at once migrate once, and all open.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dsn := schema(t)
	const n = 6
	var wg sync.WaitGroup
	stores := make([]*postgres.Store, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = postgres.Open(context.Background(), dsn, postgres.Options{MaxConns: 2})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var versions, rows int
	if err := conn.QueryRow(context.Background(), "SELECT COUNT(DISTINCT version), COUNT(*) FROM schema_migrations").Scan(&versions, &rows); err != nil {
		t.Fatal(err)
	}
	if versions != rows || rows == 0 {
		t.Fatalf("schema_migrations holds %d rows for %d versions: migrated more than once", rows, versions)
	}
}

// waitFor polls cond until it holds, or fails the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A subscription changed through one replica moves the other's generation.
func TestGenerationAcrossStores(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	before := b.SubscriptionGeneration()
	if err := a.CreateSubscription(ctx, subscription("s", store.Policy{})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's generation after a created a subscription", func() bool { return b.SubscriptionGeneration() > before })
	before = b.SubscriptionGeneration()
	if _, err := a.UpdateSubscription(ctx, "s", func(s *store.Subscription) error {
		s.Active = false
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's generation after a deactivated it", func() bool { return b.SubscriptionGeneration() > before })
}

// The listening connection comes back when it is cut, and the generation moves then (what was
// notified meanwhile is lost).
func TestListenerReconnects(t *testing.T) {
	ctx := context.Background()
	dsn := schema(t)
	a := open(t, dsn, postgres.Options{})
	defer a.Close()
	b := open(t, dsn, postgres.Options{})
	defer b.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var schemaName string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schemaName); err != nil {
		t.Fatal(err)
	}
	before := b.SubscriptionGeneration()
	var cut int
	if err := conn.QueryRow(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query LIKE 'LISTEN %' AND query LIKE '%' || $1 || '%'`, schemaName).Scan(&cut); err != nil {
		t.Fatal(err)
	}
	if cut != 2 {
		t.Fatalf("cut %d listening connections, want both stores'", cut)
	}
	waitFor(t, "b's generation after its listener came back", func() bool { return b.SubscriptionGeneration() > before })
	// And it hears again.
	waitFor(t, "b listening again", func() bool {
		var n int
		conn.QueryRow(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND query LIKE '%' || $1 || '%'`,
			schemaName).Scan(&n)
		return n == 2 // a backend's last query: its second LISTEN
	})
	before = b.SubscriptionGeneration()
	if err := a.CreateSubscription(ctx, subscription("s", store.Policy{})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's generation after a created a subscription", func() bool { return b.SubscriptionGeneration() > before })
}

// Due fires on one replica when another ingested, retried, or reactivated.
func TestDueAcrossStores(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	if err := a.CreateSubscription(ctx, subscription("s", store.Policy{})); err != nil {
		t.Fatal(err)
	}
	drain := func() {
		for {
			select {
			case <-b.Due():
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}
	wantDue := func(what string) {
		t.Helper()
		select {
		case <-b.Due():
		case <-time.After(10 * time.Second):
			t.Fatalf("no Due on b after %s on a", what)
		}
	}
	var _ store.Notifier = b

	drain()
	ingest(t, a, 1)
	wantDue("an ingest")

	_, ds, err := a.GetEvent(ctx, "e000")
	if err != nil || len(ds) != 1 {
		t.Fatalf("GetEvent: %d deliveries, %v", len(ds), err)
	}
	drain()
	if _, err := a.RetryDelivery(ctx, ds[0].ID, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantDue("a retry")

	if _, err := a.UpdateSubscription(ctx, "s", func(s *store.Subscription) error { s.Active = false; return nil }); err != nil {
		t.Fatal(err)
	}
	drain()
	if _, err := a.UpdateSubscription(ctx, "s", func(s *store.Subscription) error { store.Reactivate(s); return nil }); err != nil {
		t.Fatal(err)
	}
	wantDue("a reactivation")

	drain()
	if _, err := a.SyncFileSubscriptions(ctx, []*store.Subscription{{ID: "f", URL: "https://example.com/f", Events: []string{"x"}}}, base); err != nil {
		t.Fatal(err)
	}
	wantDue("a file sync")
}

// Prunes from two replicas at once never both delete: while one prunes, the other returns
// 0, false; and all that is due for pruning is pruned once.
func TestPruneAcrossStores(t *testing.T) {
	ctx := context.Background()
	dsn := schema(t)
	a := open(t, dsn, postgres.Options{})
	defer a.Close()
	b := open(t, dsn, postgres.Options{})
	defer b.Close()
	if err := a.CreateSubscription(ctx, subscription("s", store.Policy{})); err != nil {
		t.Fatal(err)
	}
	ingest(t, a, 30)
	now := base.Add(time.Minute)
	res, err := a.ClaimDeliveries(ctx, store.ClaimOptions{Now: now, LeaseUntil: now.Add(time.Hour),
		Subscriptions: []store.SubscriptionClaim{{ID: "s", Limit: 100}}})
	if err != nil || len(res.Claims) != 30 {
		t.Fatalf("claim: %d, %v", len(res.Claims), err)
	}
	var outcomes []*store.Outcome
	for _, c := range res.Claims {
		outcomes = append(outcomes, &store.Outcome{DeliveryID: c.Delivery.ID, SubscriptionID: "s", Token: c.Token,
			Succeeded: true, Attempts: []store.Attempt{{At: now, StatusCode: 200}}})
	}
	if _, err := a.CompleteDeliveries(ctx, outcomes, store.ErrorPolicy{ErrorStateAfter: 3, DisableAfter: time.Hour}, now); err != nil {
		t.Fatal(err)
	}
	cutoff := now.Add(time.Hour)

	// While a prune holds the lock (here, the test's own transaction), neither replica prunes.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('webhookgw prune'), hashtext(current_schema()))"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*postgres.Store{a, b} {
		if n, more, err := s.Prune(ctx, cutoff, 10); err != nil || n != 0 || more {
			t.Fatalf("Prune while another prunes: %d, more=%t, %v; want 0, false", n, more, err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// Both at once, until nothing is left: each delivery is deleted once.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for _, s := range []*postgres.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				n, _, err := s.Prune(ctx, cutoff, 4)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += n
				mu.Unlock()
				if n == 0 {
					if ds, _ := s.ListDeliveries(ctx, store.DeliveryFilter{SubscriptionID: "s"}, store.ListOptions{}); len(ds) == 0 {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if total != 30 {
		t.Fatalf("the prunes deleted %d deliveries in all, want 30", total)
	}
}

// Open of a database that cannot be reached fails, saying so.
func TestOpenUnreachable(t *testing.T) {
	if os.Getenv(envURL) == "" {
		t.Skipf("%s is not set", envURL)
	}
	_, err := postgres.Open(context.Background(), "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2", postgres.Options{})
	if err == nil || !strings.Contains(err.Error(), "postgres") {
		t.Fatalf("Open of a closed port: %v", err)
	}
}

func TestOpenRefusesMissingSchema(t *testing.T) {
	base := os.Getenv(envURL)
	if base == "" {
		t.Skipf("%s is not set", envURL)
	}
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", "gwtest_does_not_exist")
	u.RawQuery = q.Encode()
	_, err := postgres.Open(context.Background(), u.String(), postgres.Options{})
	if err == nil || !strings.Contains(err.Error(), "search_path") {
		t.Fatalf("Open with a missing schema: %v", err)
	}
	if errors.Is(err, store.ErrNotFound) {
		t.Fatal("unexpected")
	}
}

// proxy forwards TCP connections to target until it is stopped, which cuts them and refuses
// new ones, as a database that went away does; start listens again on the same address.
type proxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func (p *proxy) start() {
	p.t.Helper()
	addr := p.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Writable reports a database that cannot be reached (its connections cut, new ones refused)
// once a write fails, and nil again once a write works.
func TestWritableReportsUnreachable(t *testing.T) {
	ctx := context.Background()
	dsn := schema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: u.Host}
	p.start()
	defer p.stop()
	u.Host = p.addr
	s := open(t, u.String(), postgres.Options{})
	defer s.Close()
	if err := s.CreateSubscription(ctx, subscription("s", store.Policy{})); err != nil {
		t.Fatal(err)
	}
	if err := s.Writable(ctx); err != nil {
		t.Fatalf("Writable while writes work: %v", err)
	}

	p.stop()
	if _, err := s.UpdateSubscription(ctx, "s", func(*store.Subscription) error { return nil }); err == nil {
		t.Fatal("a write succeeded with the database unreachable")
	}
	if err := s.Writable(ctx); err == nil {
		t.Fatal("Writable is nil after a write failed with the database unreachable")
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping is nil with the database unreachable")
	}

	p.start()
	waitFor(t, "Writable once the database is back", func() bool { return s.Writable(ctx) == nil })
}

// One CompleteDeliveries batch that mixes applied and stale outcomes of one subscription, as
// the set-based statements take them together: each applied outcome lands as if alone, a stale
// one's attempts are logged and counted and nothing else, and the subscription's failures are
// counted in the outcomes' order.
func TestCompleteMixedBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t, schema(t), postgres.Options{})
	defer s.Close()
	if err := s.CreateSubscription(ctx, subscription("a", store.Policy{})); err != nil {
		t.Fatal(err)
	}
	ingest(t, s, 4)
	now := base.Add(time.Second)
	res, err := s.ClaimDeliveries(ctx, store.ClaimOptions{Now: now, LeaseUntil: now.Add(time.Minute),
		Subscriptions: []store.SubscriptionClaim{{ID: "a", Limit: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Claims) != 4 {
		t.Fatalf("claimed %d, want 4", len(res.Claims))
	}
	c := res.Claims
	ok := store.Attempt{At: now, StatusCode: 200}
	bad := store.Attempt{At: now, StatusCode: 503, Error: "503"}
	retry := now.Add(time.Hour)
	outcomes := []*store.Outcome{
		{DeliveryID: c[0].Delivery.ID, SubscriptionID: "a", Token: c[0].Token, Attempts: []store.Attempt{ok}, Succeeded: true},
		{DeliveryID: c[1].Delivery.ID, SubscriptionID: "a", Token: c[1].Token + 1, Attempts: []store.Attempt{bad, bad}}, // stale
		{DeliveryID: c[2].Delivery.ID, SubscriptionID: "a", Token: c[2].Token, Attempts: []store.Attempt{ok}, Succeeded: true},
		{DeliveryID: c[3].Delivery.ID, SubscriptionID: "a", Token: c[3].Token, Attempts: []store.Attempt{bad}, NextAttemptAt: &retry},
	}
	stale, err := s.CompleteDeliveries(ctx, outcomes, store.ErrorPolicy{ErrorStateAfter: 10, DisableAfter: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) != 1 || stale[0] != c[1].Delivery.ID {
		t.Fatalf("stale %q, want [%s]", stale, c[1].Delivery.ID)
	}
	want := []struct {
		status   store.DeliveryStatus
		attempts int
		step     int
		code     int
	}{{store.Succeeded, 1, 0, 200}, {store.Pending, 2, 0, 0}, {store.Succeeded, 1, 0, 200}, {store.Pending, 1, 1, 503}}
	for i, w := range want {
		d, log, err := s.GetDelivery(ctx, c[i].Delivery.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.Status != w.status || d.Attempts != w.attempts || d.Step != w.step || d.LastStatusCode != w.code || len(log) != w.attempts {
			t.Errorf("delivery %d: %s attempts=%d step=%d code=%d, %d logged; want %+v", i, d.Status, d.Attempts, d.Step,
				d.LastStatusCode, len(log), w)
		}
	}
	if d, _, _ := s.GetDelivery(ctx, c[3].Delivery.ID); d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(retry) {
		t.Errorf("the retried delivery is due at %v, want %v", d.NextAttemptAt, retry)
	}
	sub, err := s.GetSubscription(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if sub.ConsecutiveFailures != 1 || sub.InErrorState || !sub.Active {
		t.Errorf("subscription: failures=%d error=%v active=%v, want 1 false true", sub.ConsecutiveFailures, sub.InErrorState, sub.Active)
	}
}
