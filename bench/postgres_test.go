package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store/postgres"
)

// testDSN returns the PostgreSQL the tests may use, or skips t.
func testDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("GATEWAY_TEST_POSTGRES_URL")
	if dsn == "" {
		t.Skip("GATEWAY_TEST_POSTGRES_URL is not set: set it to a PostgreSQL URL (such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL tests")
	}
	return dsn
}

// schemaExists reports whether the database dsn names has the schema.
func schemaExists(t *testing.T, dsn, schema string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// --store postgres runs the in-process gateway on PostgreSQL, in a schema of its own that is
// gone after the run.
func TestInProcessPostgres(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	code, rep, stderr := runMain(t, "--store", "postgres", "--dsn", dsn, "--events", "300", "--subscriptions", "2",
		"--concurrency", "4", "--drain-timeout", "30s")
	if code != 0 || len(rep.Runs) != 1 {
		t.Fatalf("exit %d, %d runs; stderr:\n%s", code, len(rep.Runs), stderr)
	}
	r := rep.Runs[0]
	if r.Accepted != 300 || r.Deliveries != 600 || r.Lost != 0 || r.Duplicates != 0 || !r.Drained {
		t.Errorf("accepted %d, deliveries %d, lost %d, duplicates %d, drained %v; want 300, 600, 0, 0, true (first error %q)",
			r.Accepted, r.Deliveries, r.Lost, r.Duplicates, r.Drained, r.FirstError)
	}
	schema := regexp.MustCompile(`schema (bench_[0-9a-f]+)`).FindStringSubmatch(r.Target)
	if schema == nil {
		t.Fatalf("the target %q names no schema", r.Target)
	}
	if schemaExists(t, dsn, schema[1]) {
		t.Errorf("schema %s is still there after the run", schema[1])
	}
}

// startReplica serves a gateway on dsn, on loopback, until t ends, and returns its base URL.
func startReplica(t *testing.T, dsn, token string) string {
	t.Helper()
	ctx := context.Background()
	st, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Admin.Tokens = []string{token}
	cfg.Security.RequireHTTPS, cfg.Security.AllowPrivateNetworks = false, true
	cfg.Store.Driver, cfg.Store.DSN = "postgres", dsn
	gw, err := gateway.New(gateway.Options{Config: cfg, Store: st, Plugins: builtin.Registry(), Logger: newLogger("off", nil)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- gw.Serve(serveCtx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("replica: %v", err)
		}
		st.Close()
	})
	return "http://" + ln.Addr().String()
}

// ingested returns the events a gateway counts as ingested (GET /metrics).
func ingested(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "webhook_gateway_events_ingested_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	return n
}

// --target given twice, or as a list, spreads the posts over replicas sharing one database, and
// registers the subscriptions through the first: every event reaches its subscriber once.
func TestReplicas(t *testing.T) {
	t.Parallel()
	dsn, _, drop, err := freshSchema(context.Background(), testDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Error(err)
		}
	})
	const token = "replicas-token"
	a, b := startReplica(t, dsn, token), startReplica(t, dsn, token)
	for _, args := range [][]string{{"--target", a, "--target", b}, {"--target", a + "," + b}} {
		before := []int{ingested(t, a), ingested(t, b)}
		code, rep, stderr := runMain(t, append(args, "--token", token, "--events", "200", "--concurrency", "4", "--drain-timeout", "30s")...)
		if code != 0 || len(rep.Runs) != 1 {
			t.Fatalf("%v: exit %d, %d runs; stderr:\n%s", args, code, len(rep.Runs), stderr)
		}
		r := rep.Runs[0]
		if r.Accepted != 200 || r.Deliveries != 200 || r.Lost != 0 || r.Duplicates != 0 || !r.Drained {
			t.Errorf("%v: accepted %d, deliveries %d, lost %d, duplicates %d, drained %v; want 200, 200, 0, 0, true (first error %q)",
				args, r.Accepted, r.Deliveries, r.Lost, r.Duplicates, r.Drained, r.FirstError)
		}
		if got := []int{ingested(t, a) - before[0], ingested(t, b) - before[1]}; got[0] != 100 || got[1] != 100 {
			t.Errorf("%v: the replicas ingested %v events; want 100 each", args, got)
		}
		if !strings.Contains(r.Target, "2 gateways") {
			t.Errorf("%v: target %q", args, r.Target)
		}
	}
}
