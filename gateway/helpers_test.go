package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/sqlite"
)

const adminToken = "test-admin-token"

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// env is a gateway serving on a real loopback listener over a real SQLite file.
type env struct {
	t     testing.TB
	gw    *gateway.Gateway
	store store.Store
	base  string
	admin string // the admin listener's base URL, when cfg.Admin.Listen is set
	clock *clock
	cfg   *config.Config

	stop     func() // cancels Serve's context
	served   chan error
	stopOnce sync.Once
	stopErr  error
}

// shutdown stops the gateway as SIGTERM would and returns what Serve returned.
func (e *env) shutdown() error {
	e.stopOnce.Do(func() {
		e.stop()
		e.stopErr = <-e.served
	})
	return e.stopErr
}

var start = time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)

// gatewayOptions are the options newEnvWith passes to gateway.New.
type gatewayOptions = gateway.Options

// newEnv starts a gateway; edit, if not nil, changes the configuration first.
func newEnv(t testing.TB, edit func(*config.Config)) *env {
	t.Helper()
	return newEnvWith(t, edit, nil)
}

// newEnvWith is newEnv with a say in the gateway's options too.
func newEnvWith(t testing.TB, edit func(*config.Config), editOpts func(*gatewayOptions)) *env {
	t.Helper()
	return newEnvAt(t, filepath.Join(t.TempDir(), "gateway.db"), edit, editOpts)
}

// newEnvAt is newEnvWith on the SQLite file at path, which may hold an earlier env's data
// (shut that one down first: one process, one file).
func newEnvAt(t testing.TB, path string, edit func(*config.Config), editOpts func(*gatewayOptions)) *env {
	t.Helper()
	return newEnvOn(t, path, "127.0.0.1:0", edit, editOpts)
}

// newEnvOn is newEnvAt listening on addr: the address of an earlier env, shut down, for a
// client that should find the new gateway where the old one was.
func newEnvOn(t testing.TB, path, addr string, edit func(*config.Config), editOpts func(*gatewayOptions)) *env {
	t.Helper()
	cfg := config.Default()
	cfg.Admin.Tokens = []string{adminToken}
	if edit != nil {
		edit(cfg)
	}
	if err := cfg.Validate(builtin.Registry()); err != nil {
		t.Fatalf("test config: %v", err)
	}
	// A gateway on a file an earlier one used makes ids of its own, not those stored.
	idFormat := "00000000-0000-4000-8000-%012d"
	if _, err := os.Stat(path); err == nil {
		idFormat = fmt.Sprintf("00000000-0000-4000-9%03d-%%012d", restarts.Add(1)%1000)
	}
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: start}
	n := 0
	var mu sync.Mutex
	opts := gateway.Options{
		Config:  cfg,
		Store:   st,
		Plugins: builtin.Registry(),
		Logger:  testLogger(),
		Now:     clk.Now,
		NewID: func() string {
			mu.Lock()
			defer mu.Unlock()
			n++
			return fmt.Sprintf(idFormat, n)
		},
	}
	if editOpts != nil {
		editOpts(&opts)
	}
	gw, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, gw: gw, store: st, base: "http://" + ln.Addr().String(), clock: clk, cfg: cfg,
		stop: cancel, served: make(chan error, 1)}
	if cfg.Admin.Listen == "" {
		go func() { e.served <- gw.Serve(ctx, ln) }()
	} else {
		admin, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			t.Fatal(err)
		}
		e.admin = "http://" + admin.Addr().String()
		go func() { e.served <- gw.ServeAll(ctx, ln, admin) }()
	}
	t.Cleanup(func() {
		if err := e.shutdown(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		st.Close()
	})
	return e
}

// response is an HTTP response with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

func (r response) list(t *testing.T) []map[string]any {
	t.Helper()
	var l []map[string]any
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("response is not a JSON array: %v\n%s", err, r.body)
	}
	return l
}

// do sends a request with the admin token; body may be nil, a string (sent as is) or a value
// (sent as JSON).
func (e *env) do(method, path string, body any) response {
	return e.doAs(adminToken, method, path, body)
}

func (e *env) doAs(token, method, path string, body any) response {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.base+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// expect fails the test unless r has the status.
func expect(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d\n%s", r.status, status, r.body)
	}
}

// expectProblem fails unless r is a problem document with status naming the fields.
func expectProblem(t *testing.T, r response, status int, fields ...string) map[string]any {
	t.Helper()
	expect(t, r, status)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	p := r.json(t)
	if int(p["status"].(float64)) != status || p["title"] == "" {
		t.Fatalf("problem lacks status or title: %s", r.body)
	}
	got := map[string]bool{}
	if errs, ok := p["errors"].([]any); ok {
		for _, e := range errs {
			got[e.(map[string]any)["field"].(string)] = true
		}
	}
	for _, f := range fields {
		if !got[f] {
			t.Fatalf("problem does not name field %q: %s", f, r.body)
		}
	}
	return p
}

// count returns how many subscriptions the store holds.
func (e *env) count() int {
	e.t.Helper()
	subs, err := e.store.ListSubscriptions(context.Background(), store.ListOptions{Limit: 10000})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(subs)
}

// keys returns the keys of a JSON object in the order the body has them.
func keys(t *testing.T, body []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", body)
	}
	var out []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// subscription and plugin name the store's types in tests that write to the store directly.
type (
	subscription = store.Subscription
	plugin       = store.Plugin
)

// restarts numbers the gateways started on an existing file.
var restarts atomic.Int64

// testLogger discards the gateway's logs, or writes them to stderr when GATEWAY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("GATEWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// eventDeliveries returns an event's deliveries as GET /v1/events/{id} lists them.
func (e *env) eventDeliveries(t *testing.T, eventID string) []map[string]any {
	t.Helper()
	r := e.do("GET", "/v1/events/"+eventID, nil)
	expect(t, r, http.StatusOK)
	var ev struct {
		Deliveries []map[string]any `json:"deliveries"`
	}
	if err := json.Unmarshal(r.body, &ev); err != nil {
		t.Fatalf("GET /v1/events/%s: %v\n%s", eventID, err, r.body)
	}
	return ev.Deliveries
}

// subscriptionDeliveries returns every delivery of a subscription, as
// GET /v1/webhooks/{id}/deliveries lists them (one page of up to 1000).
func (e *env) subscriptionDeliveries(t *testing.T, subscriptionID string) []map[string]any {
	t.Helper()
	r := e.do("GET", "/v1/webhooks/"+subscriptionID+"/deliveries?limit=1000", nil)
	expect(t, r, http.StatusOK)
	return r.list(t)
}

// attemptsMatchLog fails unless a delivery (GET /v1/deliveries/{id}) counts as many attempts
// as its attempt log holds, and returns the log.
func attemptsMatchLog(t *testing.T, d map[string]any) []any {
	t.Helper()
	log, _ := d["attemptLog"].([]any)
	if n, _ := d["attempts"].(float64); int(n) != len(log) {
		t.Fatalf("delivery %v counts %v attempts but its attempt log has %d", d["id"], d["attempts"], len(log))
	}
	return log
}
