package gateway_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/internal/pgtest"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store/postgres"
)

// The connection-loss tests run a real gateway on the PostgreSQL that GATEWAY_TEST_POSTGRES_URL
// names, in a fresh schema of their own, under load, while the database goes away and comes
// back.

// pgSchema returns pgtest.Schema's DSN for t, whose connections also name themselves app
// (application_name), so that a test can find its own backends in pg_stat_activity.
func pgSchema(t *testing.T, app string) string {
	t.Helper()
	u, err := url.Parse(pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return u.String()
}

// dbProxy forwards TCP connections to a database until it is cut, which closes them and
// refuses new ones, as a database that went away does; restore listens again on the same
// address.
type dbProxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newDBProxy(t *testing.T, target string) *dbProxy {
	p := &dbProxy{t: t, target: target, conns: make(map[net.Conn]bool)}
	p.restore()
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

// restore accepts and forwards connections again.
func (p *dbProxy) restore() {
	p.t.Helper()
	p.mu.Lock()
	up := p.ln != nil
	p.mu.Unlock()
	if up {
		return
	}
	addr := cmpOr(p.addr, "127.0.0.1:0")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
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
			if p.ln != ln { // cut meanwhile
				p.mu.Unlock()
				c.Close()
				up.Close()
				continue
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes every forwarded connection and refuses new ones.
func (p *dbProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// pgEnv is a gateway on PostgreSQL, on the real clock, whose connections go through a proxy
// the test can cut, and whose backends name themselves app.
type pgEnv struct {
	*env
	proxy  *dbProxy
	direct string // the DSN without the proxy
	app    string
}

func newPGEnv(t *testing.T) *pgEnv {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	app := "gwconn_" + hex.EncodeToString(b)
	direct := pgSchema(t, app)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	p := newDBProxy(t, u.Host)
	u.Host = p.addr
	st, err := postgres.Open(context.Background(), u.String(), postgres.Options{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Admin.Tokens = []string{adminToken}
	cfg.Security.RequireHTTPS = false
	cfg.Security.AllowPrivateNetworks = true // the subscriber is on loopback
	cfg.Delivery.Jitter = 0
	cfg.Delivery.Timeout = 2 * time.Second
	cfg.Store.Driver, cfg.Store.DSN = "postgres", direct
	if err := cfg.Validate(builtin.Registry()); err != nil {
		t.Fatalf("test config: %v", err)
	}
	gw, err := gateway.New(gateway.Options{
		Config:            cfg,
		Store:             st,
		Plugins:           builtin.Registry(),
		Logger:            testLogger(),
		PollInterval:      20 * time.Millisecond,
		QuickRetryWait:    time.Millisecond,
		RecoveryRetryWait: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, gw: gw, store: st, base: "http://" + ln.Addr().String(), cfg: cfg, stop: cancel, served: make(chan error, 1)}
	go func() { e.served <- gw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		p.restore() // let the shutdown record what it can
		if err := e.shutdown(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		st.Close()
	})
	return &pgEnv{env: e, proxy: p, direct: direct, app: app}
}

// ready reports whether /readyz answers 200.
func (e *pgEnv) ready() bool {
	return e.doAs("", "GET", "/readyz", nil).status == http.StatusOK
}

// waitFor polls cond until it holds, and reports true, or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// within polls cond until it holds or d has passed.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(d, cond) {
		t.Fatalf("not within %s: %s", d, what)
	}
}

// terminateBackends kills, from a connection of its own, every backend of the database whose
// application_name is app, and returns how many.
func terminateBackends(t *testing.T, direct, app string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv(pgtest.EnvURL))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()) k`, app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// eventCounter is a subscriber that counts the requests for each event id and delivery id.
type eventCounter struct {
	mu         sync.Mutex
	events     map[string]int
	deliveries map[string]int
}

func newEventCounter(t *testing.T) (*eventCounter, string) {
	ec := &eventCounter{events: make(map[string]int), deliveries: make(map[string]int)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct{ ID string }
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ec.mu.Lock()
		ec.events[ev.ID]++
		ec.deliveries[r.Header.Get("webhook-id")]++
		ec.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return ec, srv.URL
}

// missing returns how many of ids the subscriber has not received.
func (ec *eventCounter) missing(ids []string) int {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	n := 0
	for _, id := range ids {
		if ec.events[id] == 0 {
			n++
		}
	}
	return n
}

// notReceived returns those of ids the subscriber has not received.
func (ec *eventCounter) notReceived(ids []string) []string {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	var out []string
	for _, id := range ids {
		if ec.events[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// duplicates counts the requests beyond the first for each delivery.
func (ec *eventCounter) duplicates() int {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	n := 0
	for _, c := range ec.deliveries {
		n += c - 1
	}
	return n
}

// ingestLoad posts events from several producers until stopped, one event or a small batch a
// request, and keeps what each answer said.
type ingestLoad struct {
	t        *testing.T
	base     string
	stopped  chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	accepted []string // answered 202
	refused  []string // answered 503
	ok, busy atomic.Int64
	other    []string
}

func startLoad(t *testing.T, base string, producers int) *ingestLoad {
	l := &ingestLoad{t: t, base: base, stopped: make(chan struct{})}
	client := &http.Client{Timeout: 20 * time.Second}
	for p := range producers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stopped:
					return
				default:
				}
				n := 1 + i%4 // 1 to 4 events a request
				ids := make([]string, n)
				parts := make([]string, n)
				for j := range ids {
					ids[j] = fmt.Sprintf("p%d-%d-%d", p, i, j)
					parts[j] = `{"id":"` + ids[j] + `","type":"task.state.updated","task":{"state":"done"}}`
				}
				body := parts[0]
				if n > 1 {
					body = "[" + strings.Join(parts, ",") + "]"
				}
				resp, err := client.Post(base+"/v1/events", "application/json", strings.NewReader(body))
				if err != nil {
					l.fail("POST: " + err.Error())
					return
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				l.mu.Lock()
				switch resp.StatusCode {
				case http.StatusAccepted:
					l.accepted = append(l.accepted, ids...)
					l.ok.Add(1)
				case http.StatusServiceUnavailable:
					if resp.Header.Get("Retry-After") == "" {
						l.other = append(l.other, "503 without Retry-After")
					}
					l.refused = append(l.refused, ids...)
					l.busy.Add(1)
				default:
					l.other = append(l.other, fmt.Sprintf("%d %s", resp.StatusCode, data))
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *ingestLoad) fail(msg string) {
	l.mu.Lock()
	l.other = append(l.other, msg)
	l.mu.Unlock()
}

// stop ends the load and fails the test on any answer but 202 and 503.
func (l *ingestLoad) stop() {
	l.t.Helper()
	close(l.stopped)
	l.wg.Wait()
	if len(l.other) > 0 {
		l.t.Fatalf("%d unexpected answers, the first: %s", len(l.other), l.other[0])
	}
}

// checkStored fails unless every accepted event is stored with its delivery, and every delivery
// of the schema has succeeded (its outcome recorded), once the subscriber has them all. It
// returns how many refused events were stored all the same (their commit's answer was lost).
func (e *pgEnv) checkStored(t *testing.T, ec *eventCounter, l *ingestLoad) (refusedStored int) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if !waitFor(20*time.Second, func() bool { return ec.missing(l.accepted) == 0 }) {
		ids := ec.notReceived(l.accepted)
		var rows []string
		r, err := conn.Query(ctx, `SELECT event_id || ' ' || status || ' attempts=' || attempts || ' lease_until=' || lease_until ||
			' token=' || lease_token || ' now=' || (extract(epoch from clock_timestamp())*1e9)::bigint FROM deliveries WHERE event_id = ANY($1)`, ids)
		if err == nil {
			rows, err = pgx.CollectRows(r, pgx.RowTo[string])
		}
		t.Fatalf("not within 20s: %d events answered 202 not delivered: %v; their deliveries: %v (%v)", len(ids), ids, rows, err)
	}
	var missing []string
	if err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(id), '{}') FROM unnest($1::text[]) AS a(id)
		WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = a.id)`, l.accepted).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d events answered 202 have no delivery stored, such as %s", len(missing), missing[0])
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM events WHERE id = ANY($1)`, l.refused).Scan(&refusedStored); err != nil {
		t.Fatal(err)
	}
	// Every outcome is recorded, those of rounds that ended while the database was away too.
	var notDone int
	within(t, 20*time.Second, "every delivery recorded as succeeded", func() bool {
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE status <> 'succeeded'`).Scan(&notDone); err != nil {
			t.Fatal(err)
		}
		return notDone == 0
	})
	return refusedStored
}

// While PostgreSQL cannot be reached (its connections cut, new ones refused) under load,
// /readyz is not ready and ingest answers 503 with Retry-After, never 202; once it is back the
// gateway is ready again by itself, every event answered 202 is stored and delivered, and
// every outcome is recorded, those of rounds that ended during the outage included.
func TestPostgresUnreachableUnderLoad(t *testing.T) {
	e := newPGEnv(t)
	ec, target := newEventCounter(t)
	e.subscribe(t, target, "")
	within(t, 10*time.Second, "ready", e.ready)

	l := startLoad(t, e.base, 8)
	within(t, 10*time.Second, "events accepted before the outage", func() bool { return l.ok.Load() >= 50 })
	e.proxy.cut()
	within(t, 10*time.Second, "not ready with the database away", func() bool { return !e.ready() })
	before := l.busy.Load()
	within(t, 10*time.Second, "ingest refused with the database away", func() bool { return l.busy.Load() >= before+20 })
	acceptedBefore := l.ok.Load()
	e.proxy.restore()
	within(t, 10*time.Second, "ready once the database is back", e.ready)
	within(t, 10*time.Second, "events accepted after the outage", func() bool { return l.ok.Load() >= acceptedBefore+50 })
	l.stop()

	refusedStored := e.checkStored(t, ec, l)
	t.Logf("accepted %d events, refused %d (%d of them stored all the same); subscriber got %d duplicate requests",
		len(l.accepted), len(l.refused), refusedStored, ec.duplicates())
}

// Killing the gateway's database connections (pg_terminate_backend) again and again under load
// loses nothing: every event answered 202 is stored and delivered, every outcome recorded, and
// the gateway is ready again by itself.
func TestPostgresBackendsTerminatedUnderLoad(t *testing.T) {
	e := newPGEnv(t)
	ec, target := newEventCounter(t)
	e.subscribe(t, target, "")
	within(t, 10*time.Second, "ready", e.ready)

	l := startLoad(t, e.base, 8)
	killed := 0
	for round := range 5 {
		// Under load: some events accepted since the last kill.
		now := l.ok.Load()
		within(t, 10*time.Second, fmt.Sprintf("events accepted before kill %d", round), func() bool { return l.ok.Load() >= now+30 })
		killed += terminateBackends(t, e.direct, e.app)
	}
	now := l.ok.Load()
	within(t, 10*time.Second, "events accepted after the kills", func() bool { return l.ok.Load() >= now+50 })
	l.stop()
	within(t, 10*time.Second, "ready after the kills", e.ready)

	refusedStored := e.checkStored(t, ec, l)
	t.Logf("killed %d backends; accepted %d events, refused %d (%d of them stored all the same); subscriber got %d duplicate requests",
		killed, len(l.accepted), len(l.refused), refusedStored, ec.duplicates())
}
