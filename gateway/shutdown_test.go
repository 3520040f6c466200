package gateway_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/store"
)

// On shutdown a round still in flight when the drain ends (delivery.timeout + 5s) is
// cancelled: Serve returns, the delivery is left pending, due as it was and free to be
// claimed; the attempts it made are recorded as they happened but are not counted against the
// subscription; and the next gateway on the same file delivers it.
//
// One attempt cannot outlast the drain (delivery.timeout bounds it), so the target hangs on
// every request and the round has ten quick retries: about 17s of attempts, cancelled 6s
// after the shutdown began.
func TestShutdownCancelsRoundsPastTheDrain(t *testing.T) {
	const timeout = time.Second
	drain := timeout + 5*time.Second
	bound := drain + 3*time.Second
	edit := func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowPrivateNetworks = true // the target is on loopback
		c.Delivery.Jitter = 0
		c.Delivery.Timeout = timeout
		c.Delivery.QuickRetries = 10
	}
	opts := func(o *gatewayOptions) {
		o.PollInterval = 5 * time.Millisecond
		o.QuickRetryWait = 100 * time.Millisecond
	}

	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	entered := make(chan struct{}, 1)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
			w.WriteHeader(http.StatusOK)
		case <-r.Context().Done(): // the gateway gave up on this attempt
		}
	})

	path := filepath.Join(t.TempDir(), "gateway.db")
	e := newEnvAt(t, path, edit, opts)
	sub := e.subscribe(t, rc.URL, "")
	expect(t, e.post(t, `{"id": "hung", "type": "task.state.updated"}`), http.StatusAccepted)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the target got no request within 10s")
	}

	// Stop as SIGTERM does: cancel Serve's context.
	stopped := time.Now()
	served := make(chan error, 1)
	go func() { served <- e.shutdown() }()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(bound + 20*time.Second):
		free() // let the round end, so that the cleanup's shutdown can return
		t.Fatalf("Serve had not returned %v after its context ended (drain %v)", time.Since(stopped).Round(time.Millisecond), drain)
	}
	took := time.Since(stopped)
	if took > bound {
		t.Errorf("Serve returned %v after its context ended, want at most %v (drain %v + 3s)", took.Round(time.Millisecond), bound, drain)
	}
	sent := rc.count()
	t.Logf("Serve returned %v after its context ended (drain %v); the target had got %d requests", took.Round(time.Millisecond), drain, sent)

	// The store, after Serve returned: pending, still due when it was, every request the
	// target got in the attempt log and counted, and not leased (the queue shows it due and
	// not in flight).
	ctx := context.Background()
	_, ds, err := e.store.GetEvent(ctx, "hung")
	if err != nil || len(ds) != 1 {
		t.Fatalf("deliveries %v, err %v", ds, err)
	}
	d, attempts, err := e.store.GetDelivery(ctx, ds[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.Pending || d.Attempts != sent || len(attempts) != sent || d.Step != 0 {
		t.Errorf("after a cancelled round the delivery is %s at step %d with %d attempts counted and %d logged, want pending at step 0 with %d",
			d.Status, d.Step, d.Attempts, len(attempts), sent)
	}
	if d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(start) {
		t.Errorf("after a cancelled round the delivery is due at %v, want %v (when it was ingested)", d.NextAttemptAt, start)
	}
	st, err := e.store.Stats(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 || !st.OldestDue.Equal(start) {
		t.Errorf("queue after the shutdown: %d pending, oldest due %v; want 1, due at %v and not in flight (leased)",
			st.Pending, st.OldestDue, start)
	}
	if s, err := e.store.GetSubscription(ctx, sub); err != nil || s.InErrorState || !s.Active {
		t.Errorf("subscription after a cancelled round: %+v, err %v; want active, not in error state", s, err)
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}

	// A new gateway on the same file delivers it, once the target answers.
	free()
	e2 := newEnvAt(t, path, edit, opts)
	eventually(t, "delivered after the restart", func() bool { return e2.deliveryStatus(t, "hung") == "succeeded" })
	got := e2.deliveryOf(t, "hung")
	log := attemptsMatchLog(t, got)
	if len(log) != sent+1 || log[sent].(map[string]any)["statusCode"] != 200.0 {
		t.Fatalf("after the restart: %d attempts, log %v; want the %d before and one 200", len(log), log, sent)
	}
	if n := rc.count(); n != sent+1 {
		t.Fatalf("the target got %d requests after the restart, want 1", n-sent)
	}
	if id := rc.request(sent).header.Get("Webhook-Id"); id != ds[0].ID {
		t.Fatalf("delivered after the restart with webhook-id %q, want %q", id, ds[0].ID)
	}
}

// shutdown_timeout bounds how long Serve waits, once its context ends, for a connection that
// is still open: here one accepted but with no request sent yet, which only the grace period
// ends.
func TestShutdownTimeoutBoundsTheWaitForConnections(t *testing.T) {
	const grace = 300 * time.Millisecond
	e := newEnv(t, func(c *config.Config) { c.ShutdownTimeout = grace })
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, "the connection is accepted", func() bool { return e.gw.App().Server().GetOpenConnectionsCount() == 1 })

	stopped := time.Now()
	if err := e.shutdown(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	took := time.Since(stopped)
	// At least the grace period, and far less than the 10s default.
	if took < grace || took > grace+5*time.Second {
		t.Fatalf("Serve returned %v after its context ended, want shutdown_timeout %v (plus a little)", took.Round(time.Millisecond), grace)
	}
}
