package examples_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestPostgresExampleTwoReplicas runs two gateway processes, built from this repository, with
// the postgres example's gateway.yaml on a schema of their own in the PostgreSQL database
// GATEWAY_TEST_POSTGRES_URL names (skipped without it), as a role that is no superuser and owns
// only that schema (the example's set-up). They start at once (one migration, one sync of the
// declared subscription). Events posted to either are delivered once each to a receiver on
// loopback, also one posted to both at once; a webhook created through one, with an encrypted
// secret, is listed and read through the other.
func TestPostgresExampleTwoReplicas(t *testing.T) {
	base := os.Getenv("GATEWAY_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("GATEWAY_TEST_POSTGRES_URL is not set")
	}
	exe := buildGatewayBinary(t)
	dsn := freshRoleAndSchema(t, base)
	configPath, err := filepath.Abs(postgresConfig)
	if err != nil {
		t.Fatal(err)
	}

	rc := &replicaReceiver{byEvent: make(map[string][]string)}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	const adminToken, ingestToken = "test-admin-token", "test-ingest-token"
	key := make([]byte, 32)
	rand.Read(key)
	env := []string{
		"GATEWAY_STORE_DSN=" + dsn,
		"GATEWAY_ADMIN_TOKEN=" + adminToken,
		"GATEWAY_INGEST_TOKEN=" + ingestToken,
		"GATEWAY_ENCRYPTION_KEY=" + base64.StdEncoding.EncodeToString(key),
		"GATEWAY_RECEIVER_URL=" + srv.URL + "/webhook",
		"GATEWAY_RECEIVER_CIDR=127.0.0.1/32",
	}
	// Both at once: they migrate the empty schema and sync the file's subscription together.
	replicas := []*replica{
		startReplica(t, exe, configPath, env),
		startReplica(t, exe, configPath, env),
	}
	for _, r := range replicas {
		r.waitReady()
	}

	// The declared subscription exists once, whichever replica is asked.
	for i, r := range replicas {
		var subs []struct {
			ID     string `json:"id"`
			Source string `json:"source"`
		}
		r.call(adminToken, "GET", "/v1/webhooks", "", 200, &subs)
		if len(subs) != 1 || subs[0].ID != "demo-receiver" || subs[0].Source != "file" {
			t.Fatalf("replica %d lists %+v, want the one declared subscription demo-receiver", i+1, subs)
		}
	}

	// One event through each replica, and one through both at once.
	type ingested struct {
		ID         string `json:"id"`
		Deliveries int    `json:"deliveries"`
		Duplicate  bool   `json:"duplicate"`
	}
	events := []string{"evt-via-1", "evt-via-2", "evt-via-both"}
	for i, id := range events[:2] {
		var got ingested
		replicas[i].call(ingestToken, "POST", "/v1/events", eventBody(id), 202, &got)
		if got.ID != id || got.Deliveries != 1 || got.Duplicate {
			t.Fatalf("replica %d answered %+v to %s, want 1 delivery, not a duplicate", i+1, got, id)
		}
	}
	answers := make([]ingested, len(replicas))
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Go(func() { r.call(ingestToken, "POST", "/v1/events", eventBody(events[2]), 202, &answers[i]) })
	}
	wg.Wait()
	if answers[0].Duplicate == answers[1].Duplicate || answers[0].Deliveries != 1 || answers[1].Deliveries != 1 {
		t.Fatalf("%s posted to both replicas at once: answers %+v, want one stored and one duplicate, each of 1 delivery", events[2], answers)
	}

	// Each event is delivered, and recorded as one successful attempt, seen from the other
	// replica than the one it was posted to.
	for i, id := range events {
		other := replicas[(i+1)%len(replicas)]
		began := time.Now()
		other.waitFor(fmt.Sprintf("%s recorded as delivered", id), func() bool {
			var ev struct {
				Deliveries []struct {
					Status   string `json:"status"`
					Attempts int    `json:"attempts"`
				} `json:"deliveries"`
			}
			other.call(adminToken, "GET", "/v1/events/"+id, "", 200, &ev)
			if len(ev.Deliveries) != 1 {
				t.Fatalf("%s has %d deliveries, want 1", id, len(ev.Deliveries))
			}
			d := ev.Deliveries[0]
			if d.Status == "succeeded" && d.Attempts != 1 {
				t.Fatalf("%s succeeded after %d attempts, want 1", id, d.Attempts)
			}
			return d.Status == "succeeded"
		})
		t.Logf("%s: recorded as delivered after %s", id, time.Since(began).Round(time.Millisecond))
	}

	// A webhook created through one replica, with a secret stored encrypted, is listed and read
	// through the other (which decrypts it with the same key). It takes task events, which this
	// test posts none of.
	var created struct {
		ID string `json:"id"`
	}
	replicas[0].call(adminToken, "POST", "/v1/webhooks",
		`{"url": "https://hooks.example.com/tasks", "events": ["task.state.updated"],
		  "plugins": [{"name": "bearer", "config": {"token": "a-secret-of-the-subscriber"}}]}`, 201, &created)
	var listed []struct {
		ID string `json:"id"`
	}
	replicas[1].call(adminToken, "GET", "/v1/webhooks", "", 200, &listed)
	if !slices.ContainsFunc(listed, func(s struct {
		ID string `json:"id"`
	}) bool {
		return s.ID == created.ID
	}) {
		t.Fatalf("replica 2 lists %+v, without %s created through replica 1", listed, created.ID)
	}
	var read struct {
		ID      string `json:"id"`
		Plugins []struct {
			Name string `json:"name"`
		} `json:"plugins"`
	}
	replicas[1].call(adminToken, "GET", "/v1/webhooks/"+created.ID, "", 200, &read)
	if read.ID != created.ID || len(read.Plugins) != 1 || read.Plugins[0].Name != "bearer" {
		t.Fatalf("replica 2 reads %+v, want %s with its bearer plugin", read, created.ID)
	}

	// Once both replicas have stopped, no attempt is in flight: each event arrived once.
	for i, r := range replicas {
		if code := r.stop(); code != 0 {
			t.Fatalf("replica %d exited %d on SIGTERM\n%s", i+1, code, r.output)
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range events {
		if got := rc.byEvent[id]; len(got) != 1 {
			t.Errorf("%s arrived %d times (webhook-ids %v), want once", id, len(got), got)
		}
	}
	if len(rc.byEvent) != len(events) || len(rc.problems) > 0 {
		t.Errorf("the receiver got events %v, want only %v; problems: %v", keys(rc.byEvent), events, rc.problems)
	}
}

func eventBody(id string) string {
	return fmt.Sprintf(`{"id": %q, "type": "transaction.state.updated", "transaction": {"id": "tx-1", "state": "completed"}}`, id)
}

func keys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// replicaReceiver records the webhook-id of every delivery, by event id.
type replicaReceiver struct {
	mu       sync.Mutex
	byEvent  map[string][]string
	problems []string
}

func (rc *replicaReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var ev struct {
		ID string `json:"id"`
	}
	if err == nil {
		err = json.Unmarshal(body, &ev)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err != nil || ev.ID == "" || r.Header.Get("webhook-id") == "" || r.URL.Path != "/webhook" {
		rc.problems = append(rc.problems, fmt.Sprintf("%s %s (err %v, webhook-id %q): %.200q", r.Method, r.URL.Path, err, r.Header.Get("webhook-id"), body))
		return
	}
	rc.byEvent[ev.ID] = append(rc.byEvent[ev.ID], r.Header.Get("webhook-id"))
}

// buildGatewayBinary builds the gateway from the repository root into a temporary directory, as
// the root package's tests do: with the test binary's -race and CGO_ENABLED, so that the build
// reuses what the test's build compiled. It skips under -short.
func buildGatewayBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out := filepath.Join(t.TempDir(), "gateway")
	args := []string{"build"}
	var env []string
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch {
			case s.Key == "-race" && s.Value == "true":
				args = append(args, "-race")
			case s.Key == "CGO_ENABLED":
				env = append(env, "CGO_ENABLED="+s.Value)
			}
		}
	}
	args = append(args, "-o", out, ".")
	cmd := exec.Command("go", args...)
	cmd.Dir = ".." // the repository root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// freshRoleAndSchema makes, in the database base names, a login role that is no superuser and a
// schema it owns, both dropped when the test ends, and returns a DSN that connects as that role
// to that schema. Without the privilege to create roles it uses base's own role.
func freshRoleAndSchema(t *testing.T, base string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("GATEWAY_TEST_POSTGRES_URL: %v", err)
	}
	defer conn.Close(context.Background())
	b := make([]byte, 6)
	rand.Read(b)
	name := "gwex_" + hex.EncodeToString(b)
	password := hex.EncodeToString(b) + "-pw"
	ident := pgx.Identifier{name}.Sanitize()

	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("GATEWAY_TEST_POSTGRES_URL: %v", err)
	}
	owner := "CURRENT_USER"
	_, err = conn.Exec(ctx, "CREATE ROLE "+ident+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '"+password+"'")
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "42501": // insufficient_privilege
		t.Logf("cannot create a role (%v): running as the URL's own", err)
	case err != nil:
		t.Fatal(err)
	default:
		owner = ident
		u.User = url.UserPassword(name, password)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident+" AUTHORIZATION "+owner); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
		}
		if owner == ident {
			if _, err := conn.Exec(ctx, "DROP ROLE "+ident); err != nil {
				t.Errorf("dropping role %s: %v", name, err)
			}
		}
	})
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// replica is a running gateway process.
type replica struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string
	output *lockedBuffer
	done   chan struct{} // closed when the process has exited
}

// lockedBuffer is a bytes.Buffer a process writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startReplica starts exe serve --config configPath on a free loopback port, with env over an
// environment without the test's own GATEWAY_ variables. It does not wait.
func startReplica(t *testing.T, exe, configPath string, env []string) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(exe, "serve", "--config", configPath)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEWAY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, "GATEWAY_LISTEN="+addr)
	r := &replica{t: t, cmd: cmd, base: "http://" + addr, output: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.output, r.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("replica on %s:\n%s", addr, r.output)
		}
	})
	return r
}

// waitReady waits up to 30 s for /readyz to answer 200, failing if the process exits first.
func (r *replica) waitReady() {
	r.t.Helper()
	r.waitFor("/readyz answers 200", func() bool {
		resp, err := http.Get(r.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// waitFor polls cond until it holds, for up to 30 s, failing if the process exits first.
func (r *replica) waitFor(what string, cond func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-r.done:
			r.t.Fatalf("the replica exited while waiting until %s\n%s", what, r.output)
		default:
		}
		if cond() {
			return
		}
	}
	r.t.Fatalf("not within 30 s: %s", what)
}

// call makes a request with token, checks its status and decodes its JSON body into out.
func (r *replica) call(token, method, path, body string, status int, out any) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.base+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		r.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		r.t.Fatalf("%s %s: %v: %s", method, path, err, data)
	}
}

// stop sends SIGTERM and returns the exit code, once the process has exited (within 30 s).
func (r *replica) stop() int {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		r.t.Fatal(err)
	}
	select {
	case <-r.done:
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		r.t.Fatalf("the replica did not stop within 30 s\n%s", r.output)
	}
	return -1
}
