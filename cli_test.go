package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The command line's tests run the built binary, once built per test run, against a gateway
// process (the same binary) and loopback receivers.

var built struct {
	once      sync.Once
	dir, path string
	err       error
}

// builtBinary is the gateway binary, built the first time a test asks for it (removed by
// TestMain). It skips under -short.
func builtBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "gateway-test-bin-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "gateway")
		built.err = goBuild("", built.path)
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func removeBuiltBinary() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

const cliIngestToken = "cli-ingest-token"

// cliGateway is a running gateway and the environment that points the command line at it.
type cliGateway struct {
	t   *testing.T
	exe string
	p   *process
	env []string // GATEWAY_URL, GATEWAY_ADMIN_TOKEN, GATEWAY_INGEST_TOKEN
}

// cliGatewayConfig lets deliveries reach plain-http loopback targets and fails a delivery at
// its first failed attempt.
const cliGatewayConfig = `admin:
  tokens: [` + testToken + `]
ingest:
  tokens: [` + cliIngestToken + `]
store:
  dsn: gw.db
security:
  require_https: false
  allowed_cidrs: ["127.0.0.0/8"]
delivery:
  quick_retries: 0
  schedule: []
`

// startCLIGateway runs the built gateway with config and waits until it is ready.
func startCLIGateway(t *testing.T, config string) *cliGateway {
	t.Helper()
	exe := builtBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, config)
	addr := freeAddr(t)
	cmd := exec.Command(exe, "serve", "--config", cfg)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "GATEWAY_LISTEN="+addr)
	p := startProcess(t, cmd, addr)
	p.waitReady()
	return &cliGateway{t: t, exe: exe, p: p, env: []string{
		"GATEWAY_URL=" + p.base, "GATEWAY_ADMIN_TOKEN=" + testToken, "GATEWAY_INGEST_TOKEN=" + cliIngestToken,
	}}
}

// cleanEnv is this process's environment without GATEWAY_ variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEWAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// cmd is the command line with args, its environment pointing at the gateway, plus env.
func (g *cliGateway) cmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, g.exe, args...)
	cmd.Env = append(append(cleanEnv(), g.env...), env...)
	cmd.Dir = g.t.TempDir()
	return cmd
}

// run runs the command line with stdin and returns what it printed and its exit code, within 60s.
func (g *cliGateway) run(stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := g.cmd(ctx, env, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		g.t.Fatal(err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// ok runs the command line and fails the test unless it exits 0.
func (g *cliGateway) ok(args ...string) string {
	g.t.Helper()
	stdout, stderr, code := g.run("", nil, args...)
	if code != 0 {
		g.t.Fatalf("gateway %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// okJSON runs the command line, wants exit 0 and decodes its stdout, one line of JSON, into v.
func (g *cliGateway) okJSON(v any, args ...string) {
	g.t.Helper()
	out := g.ok(args...)
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		g.t.Fatalf("gateway %s: stdout is not one line of JSON:\n%s", strings.Join(args, " "), out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		g.t.Fatalf("gateway %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs the command line and wants exit code with each of want in its stderr.
func (g *cliGateway) fails(code int, want []string, env []string, args ...string) {
	g.t.Helper()
	stdout, stderr, got := g.run("", env, args...)
	if got != code {
		g.t.Errorf("gateway %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, stdout, stderr)
		return
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			g.t.Errorf("gateway %s: stderr has no %q:\n%s", strings.Join(args, " "), w, stderr)
		}
	}
}

// onTerminal runs the command line with stdout on a terminal and returns what it printed.
func (g *cliGateway) onTerminal(args ...string) string {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := g.cmd(ctx, nil, args...)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, wait := startOnTerminal(g.t, cmd)
	if err := wait(); err != nil {
		g.t.Fatalf("gateway %s on a terminal: %v\n%s%s", strings.Join(args, " "), err, terminalText(out), errOut.String())
	}
	return terminalText(out)
}

// wantLines fails unless text has a line matching each pattern (regular expressions, with
// runs of spaces between columns written as "  +").
func wantLines(t *testing.T, what, text string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)^` + p + `\s*$`).MatchString(text) {
			t.Errorf("%s: no line matches %q:\n%s", what, p, text)
		}
	}
}

// waitUntil polls cond every 20ms for up to 15s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 15s", what)
}

type cliWebhook struct {
	ID             string            `json:"id"`
	URL            string            `json:"url"`
	Events         []string          `json:"events"`
	Headers        map[string]string `json:"headers"`
	DeliveryPolicy struct {
		RateLimit *float64 `json:"rateLimit"`
	} `json:"deliveryPolicy"`
}

type cliDelivery struct {
	ID             string `json:"id"`
	EventID        string `json:"eventId"`
	EventType      string `json:"eventType"`
	SubscriptionID string `json:"subscriptionId"`
	Status         string `json:"status"`
	LastStatusCode *int   `json:"lastStatusCode"`
	AttemptLog     []struct {
		StatusCode *int `json:"statusCode"`
	} `json:"attemptLog"`
}

func TestCLIWebhooks(t *testing.T) {
	g := startCLIGateway(t, cliGatewayConfig)

	var w1 cliWebhook
	g.okJSON(&w1, "webhooks", "create", "--url", "http://127.0.0.1:9/one", "--event", "task.state.updated", "--header", "X-Team=ops")
	if w1.ID == "" || w1.URL != "http://127.0.0.1:9/one" || len(w1.Events) != 1 || w1.Events[0] != "task.state.updated" || w1.Headers["X-Team"] != "ops" {
		t.Errorf("webhooks create with flags: %+v", w1)
	}
	file := filepath.Join(t.TempDir(), "hook.json")
	writeConfig(t, file, `{"url": "http://127.0.0.1:9/two", "deliveryPolicy": {"rateLimit": 5}}`)
	var w2, w3 cliWebhook
	g.okJSON(&w2, "webhooks", "create", "--file", file)
	if w2.URL != "http://127.0.0.1:9/two" || w2.DeliveryPolicy.RateLimit == nil || *w2.DeliveryPolicy.RateLimit != 5 || len(w2.Events) != 2 {
		t.Errorf("webhooks create --file: %+v", w2)
	}
	stdout, stderr, code := g.run(`{"url": "http://127.0.0.1:9/three"}`, nil, "webhooks", "create", "--file", "-")
	if code != 0 || json.Unmarshal([]byte(stdout), &w3) != nil || w3.URL != "http://127.0.0.1:9/three" {
		t.Errorf("webhooks create --file - (stdin): exit %d\n%s%s", code, stdout, stderr)
	}

	var list []cliWebhook
	g.okJSON(&list, "webhooks", "list")
	if len(list) != 3 || list[0].ID != w1.ID || list[1].ID != w2.ID || list[2].ID != w3.ID {
		t.Errorf("webhooks list: %+v", list)
	}
	list = nil
	g.okJSON(&list, "webhooks", "list", "--limit", "1", "--all")
	if len(list) != 3 || list[2].ID != w3.ID {
		t.Errorf("webhooks list --limit 1 --all: %+v", list)
	}
	stdout, stderr, code = g.run("", nil, "webhooks", "list", "--limit", "2")
	if code != 0 || strings.Count(stdout, `"id"`) != 2 || !strings.Contains(stderr, "--after "+w2.ID) {
		t.Errorf("webhooks list --limit 2: exit %d\n%s%s", code, stdout, stderr)
	}
	var got cliWebhook
	g.okJSON(&got, "webhooks", "get", w1.ID)
	if got.ID != w1.ID || got.Headers["X-Team"] != "ops" {
		t.Errorf("webhooks get: %+v", got)
	}
	g.okJSON(&got, "webhooks", "get", w1.ID, "--json") // flags after the argument too

	table := g.onTerminal("webhooks", "list")
	wantLines(t, "webhooks list on a terminal", table,
		`ID  +URL  +EVENTS  +SOURCE  +STATE`,
		w1.ID+`  +http://127.0.0.1:9/one  +task.state.updated  +api  +active`,
		w2.ID+`  +http://127.0.0.1:9/two  +transaction.state.updated,task.state.updated  +api  +active`)
	if strings.Contains(table, "{") {
		t.Errorf("webhooks list on a terminal printed JSON:\n%s", table)
	}
	if out := g.onTerminal("webhooks", "list", "--json"); !strings.HasPrefix(out, `[{"id":"`+w1.ID) {
		t.Errorf("webhooks list --json on a terminal:\n%s", out)
	}
	wantLines(t, "webhooks get on a terminal", g.onTerminal("webhooks", "get", w1.ID),
		`ID  +`+w1.ID, `URL  +http://127.0.0.1:9/one`, `Events  +task.state.updated`, `Headers  +X-Team: ops`,
		`Policy  +defaults`, `Source  +api`, `State  +active`)
	wantLines(t, "webhooks create on a terminal", g.onTerminal("webhooks", "create", "--url", "http://127.0.0.1:9/four"),
		`ID  +[0-9a-f-]{36}`, `URL  +http://127.0.0.1:9/four`)

	if out := g.ok("webhooks", "delete", w3.ID); out != "" {
		t.Errorf("webhooks delete (JSON): stdout %q, want nothing", out)
	}
	wantLines(t, "webhooks delete on a terminal", g.onTerminal("webhooks", "delete", w2.ID), `Deleted `+w2.ID+`\.`)
	g.fails(1, []string{"gateway: webhooks get: 404 Not Found: no subscription has the id"}, nil, "webhooks", "get", w3.ID)

	// Errors: the API's problem (1), usage (2), no gateway (3).
	g.fails(1, []string{"gateway: webhooks create: 400 Bad Request: the request has invalid fields\n", "\n  url: ", "\n  events[0]: "}, nil,
		"webhooks", "create", "--url", "ftp://example.com", "--event", "nope")
	g.fails(1, []string{"401 Unauthorized"}, []string{"GATEWAY_ADMIN_TOKEN=wrong"}, "webhooks", "list")
	g.fails(1, []string{"401 Unauthorized", "no token was sent: set --token or $GATEWAY_ADMIN_TOKEN"}, []string{"GATEWAY_ADMIN_TOKEN="}, "webhooks", "list")
	g.fails(2, []string{"gateway: webhooks create: --url or --file is required", "usage: gateway webhooks create"}, nil, "webhooks", "create")
	g.fails(2, []string{`--header "X-Team": want NAME=VALUE`}, nil, "webhooks", "create", "--url", "http://127.0.0.1:9/x", "--header", "X-Team")
	g.fails(2, []string{"--file is the whole request"}, nil, "webhooks", "create", "--url", "http://127.0.0.1:9/x", "--file", file)
	g.fails(2, []string{"flag provided but not defined: -bogus"}, nil, "webhooks", "list", "--bogus")
	g.fails(2, []string{"missing argument"}, nil, "webhooks", "get")
	g.fails(2, []string{`unexpected argument "b"`}, nil, "webhooks", "delete", "a", "b")
	g.fails(2, []string{`gateway: webhooks: unknown command "nope"`}, nil, "webhooks", "nope")
	down := "http://" + freeAddr(t)
	g.fails(3, []string{"gateway: webhooks list: cannot reach the gateway at " + down}, nil, "webhooks", "list", "--url", down)
	g.fails(3, []string{"cannot reach the gateway"}, []string{"GATEWAY_URL=" + down}, "webhooks", "get", w1.ID)
	g.fails(3, []string{"cannot reach the gateway"}, nil, "webhooks", "create", "--gateway", down, "--url", "http://127.0.0.1:9/x")
}

// receiver is a loopback target that answers status (settable) and counts requests.
type receiver struct {
	*httptest.Server
	status atomic.Int32
	hits   atomic.Int32
	last   atomic.Value // http.Header of the last request
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{}
	r.status.Store(int32(status))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		r.last.Store(req.Header.Clone())
		r.hits.Add(1)
		w.WriteHeader(int(r.status.Load()))
		fmt.Fprint(w, "answer from the receiver")
	}))
	t.Cleanup(r.Close)
	return r
}

func TestCLIEventsSend(t *testing.T) {
	g := startCLIGateway(t, cliGatewayConfig)
	rc := newReceiver(t, 200)
	var w cliWebhook
	g.okJSON(&w, "webhooks", "create", "--url", rc.URL)

	stdout, stderr, code := g.run(`{"id": "s1", "type": "task.state.updated"}`, nil, "events", "send")
	if code != 0 || stdout != `{"id":"s1","type":"task.state.updated","deliveries":1}`+"\n" {
		t.Errorf("events send from stdin: exit %d\n%s%s", code, stdout, stderr)
	}
	file := filepath.Join(t.TempDir(), "events.json")
	writeConfig(t, file, `[{"id": "f1", "type": "task.state.updated"}, {"id": "s1", "type": "task.state.updated"}]`)
	var answers []struct {
		ID         string `json:"id"`
		Deliveries int    `json:"deliveries"`
		Duplicate  bool   `json:"duplicate"`
	}
	g.okJSON(&answers, "events", "send", file)
	if len(answers) != 2 || answers[0].ID != "f1" || answers[0].Deliveries != 1 || answers[0].Duplicate || !answers[1].Duplicate {
		t.Errorf("events send FILE: %+v", answers)
	}
	writeConfig(t, file, `[{"id": "f2", "type": "transaction.state.updated"}, {"id": "f1", "type": "task.state.updated"}]`)
	wantLines(t, "events send on a terminal", g.onTerminal("events", "send", file),
		`ID  +TYPE  +DELIVERIES  +DUPLICATE`, `f2  +transaction.state.updated  +1  +no`, `f1  +task.state.updated  +1  +yes`)
	waitUntil(t, "3 deliveries received", func() bool { return rc.hits.Load() == 3 })

	g.fails(1, []string{"422 Unprocessable Entity", "accepted"}, nil, "events", "send", writeTemp(t, `{"type": "nope"}`))
	g.fails(1, []string{"400 Bad Request"}, nil, "events", "send", writeTemp(t, `{"type": `))
	g.fails(1, []string{"401 Unauthorized", "no token was sent: set --ingest-token or $GATEWAY_INGEST_TOKEN"}, []string{"GATEWAY_INGEST_TOKEN="},
		"events", "send", writeTemp(t, `{"type": "task.state.updated"}`))
	g.fails(2, []string{"no event: the input is empty"}, nil, "events", "send")
	g.fails(2, []string{"no such file or directory"}, nil, "events", "send", filepath.Join(t.TempDir(), "none.json"))
	g.fails(3, []string{"cannot reach the gateway"}, []string{"GATEWAY_INGEST_URL=http://" + freeAddr(t)}, "events", "send", file)
}

func writeTemp(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "body.json")
	writeConfig(t, f, text)
	return f
}

// sendEvents posts events through the command line and waits until every delivery has
// finished.
func (g *cliGateway) sendEvents(events string, deliveries int) {
	g.t.Helper()
	if _, stderr, code := g.run(events, nil, "events", "send"); code != 0 {
		g.t.Fatalf("events send: exit %d: %s", code, stderr)
	}
	waitUntil(g.t, "deliveries finished", func() bool {
		var pending, all []cliDelivery
		g.okJSON(&pending, "deliveries", "list", "--status", "pending")
		g.okJSON(&all, "deliveries", "list")
		return len(pending) == 0 && len(all) == deliveries
	})
}

func TestCLIDeliveries(t *testing.T) {
	g := startCLIGateway(t, cliGatewayConfig)
	good, bad := newReceiver(t, 200), newReceiver(t, 500)
	var wGood, wBad cliWebhook
	g.okJSON(&wGood, "webhooks", "create", "--url", good.URL)
	g.okJSON(&wBad, "webhooks", "create", "--url", bad.URL, "--event", "transaction.state.updated")
	g.sendEvents(`[{"id": "t1", "type": "transaction.state.updated"}, {"id": "t2", "type": "transaction.state.updated"},
		{"id": "t3", "type": "transaction.state.updated"}, {"id": "k1", "type": "task.state.updated"}]`, 7)

	var all, page []cliDelivery
	g.okJSON(&all, "deliveries", "list")
	count := func(args ...string) []cliDelivery {
		t.Helper()
		var ds []cliDelivery
		g.okJSON(&ds, append([]string{"deliveries", "list"}, args...)...)
		return ds
	}
	for _, d := range count("--status", "failed") {
		if d.SubscriptionID != wBad.ID || d.Status != "failed" {
			t.Errorf("--status failed listed %+v", d)
		}
	}
	if n := len(count("--status", "failed")); n != 3 {
		t.Errorf("--status failed: %d deliveries, want 3", n)
	}
	if ds := count("--subscription", wGood.ID); len(ds) != 4 || ds[0].Status != "succeeded" {
		t.Errorf("--subscription: %+v", ds)
	}
	if ds := count("--event-type", "task.state.updated"); len(ds) != 1 || ds[0].EventID != "k1" {
		t.Errorf("--event-type: %+v", ds)
	}
	if ds := count("--since", "1h", "--subscription", wBad.ID, "--event-type", "transaction.state.updated"); len(ds) != 3 {
		t.Errorf("--since 1h with filters: %d deliveries, want 3", len(ds))
	}
	if ds := count("--until", "1h"); len(ds) != 0 {
		t.Errorf("--until 1h: %+v, want none", ds)
	}
	if ds := count("--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(ds) != 0 {
		t.Errorf("--since an hour from now: %+v, want none", ds)
	}

	// Pages: --limit alone is one page, and says there are more; --all follows the Link.
	stdout, stderr, code := g.run("", nil, "deliveries", "list", "--limit", "2")
	json.Unmarshal([]byte(stdout), &page)
	if code != 0 || len(page) != 2 || page[0].ID != all[0].ID || !strings.Contains(stderr, "--after "+all[1].ID) {
		t.Errorf("--limit 2: exit %d, %d deliveries\n%s", code, len(page), stderr)
	}
	var every []cliDelivery
	g.okJSON(&every, "deliveries", "list", "--limit", "2", "--all")
	if len(every) != 7 {
		t.Errorf("--limit 2 --all: %d deliveries, want 7", len(every))
	}
	for i := range every {
		if i < len(all) && every[i].ID != all[i].ID {
			t.Errorf("--all: delivery %d is %s, want %s (newest first, as one page)", i, every[i].ID, all[i].ID)
		}
	}
	if ds := count("--status", "failed", "--limit", "1", "--all"); len(ds) != 3 {
		t.Errorf("--status failed --limit 1 --all: %d deliveries, want 3 (the Link keeps the filter)", len(ds))
	}
	if ds := count("--after", all[4].ID); len(ds) != 2 || ds[0].ID != all[5].ID {
		t.Errorf("--after: %+v", ds)
	}

	failed := count("--status", "failed")[0]
	rows := []string{`ID  +EVENT  +TYPE  +SUBSCRIPTION  +STATUS  +ATTEMPTS  +LAST  +CREATED`}
	for _, d := range count("--status", "failed") {
		rows = append(rows, d.ID+`  +`+d.EventID+`  +transaction.state.updated  +`+wBad.ID+`  +failed  +1  +500  +\S+Z`)
	}
	table := g.onTerminal("deliveries", "list", "--status", "failed")
	wantLines(t, "deliveries list on a terminal", table, rows...)
	if n := strings.Count(table, "\n"); n != 4 {
		t.Errorf("deliveries list --status failed on a terminal: %d lines, want 4:\n%s", n, table)
	}

	var d cliDelivery
	g.okJSON(&d, "deliveries", "get", failed.ID)
	if d.ID != failed.ID || len(d.AttemptLog) != 1 || d.AttemptLog[0].StatusCode == nil || *d.AttemptLog[0].StatusCode != 500 {
		t.Errorf("deliveries get: %+v", d)
	}
	wantLines(t, "deliveries get on a terminal", g.onTerminal("deliveries", "get", failed.ID),
		`ID  +`+failed.ID, `Event  +`+failed.EventID+` \(transaction.state.updated\)`, `Subscription  +`+wBad.ID,
		`Status  +failed`, `Attempts  +1`, `Last  +500`, `#  +AT  +DURATION  +RESULT  +RESPONSE  +TRACE`,
		`1  +\S+Z  +[0-9.]+ms  +500  +answer from the receiver  +\S+`)

	bad.status.Store(200)
	g.okJSON(&d, "deliveries", "retry", failed.ID)
	if d.ID != failed.ID || d.Status != "pending" {
		t.Errorf("deliveries retry: %+v", d)
	}
	waitUntil(t, "the retried delivery succeeded", func() bool {
		g.okJSON(&d, "deliveries", "get", failed.ID)
		return d.Status == "succeeded"
	})
	retried := count("--status", "failed")[0]
	wantLines(t, "deliveries retry on a terminal", g.onTerminal("deliveries", "retry", retried.ID),
		`ID  +`+retried.ID, `Status  +pending`)

	g.fails(1, []string{"400 Bad Request", "\n  status: must be pending, succeeded or failed", "\n  since: must be an RFC 3339 time"}, nil,
		"deliveries", "list", "--status", "lost", "--since", "yesterday")
	g.fails(1, []string{"404 Not Found"}, nil, "deliveries", "get", "nope")
	g.fails(1, []string{"404 Not Found"}, nil, "deliveries", "retry", "nope")
	g.fails(2, []string{`invalid value "x" for flag -limit`}, nil, "deliveries", "list", "--limit", "x")
	g.fails(2, []string{`gateway: deliveries: unknown command "show"`}, nil, "deliveries", "show")
	g.fails(3, []string{"cannot reach the gateway"}, []string{"GATEWAY_URL=http://" + freeAddr(t)}, "deliveries", "list")
}

func TestCLIRecoverAndTest(t *testing.T) {
	g := startCLIGateway(t, cliGatewayConfig)
	rc := newReceiver(t, 503)
	var w cliWebhook
	g.okJSON(&w, "webhooks", "create", "--url", rc.URL)
	g.sendEvents(`[{"id": "r1", "type": "transaction.state.updated"}, {"id": "r2", "type": "task.state.updated"}]`, 2)

	rc.status.Store(200)
	var rec struct {
		Recovered int     `json:"recovered"`
		Since     string  `json:"since"`
		Until     *string `json:"until"`
	}
	g.okJSON(&rec, "recover", w.ID, "--since", "1h")
	if rec.Recovered != 2 || rec.Since == "" || rec.Until != nil {
		t.Errorf("recover: %+v", rec)
	}
	waitUntil(t, "the recovered deliveries succeeded", func() bool {
		var ds []cliDelivery
		g.okJSON(&ds, "deliveries", "list", "--status", "succeeded")
		return len(ds) == 2
	})
	wantLines(t, "recover on a terminal", g.onTerminal("recover", "--since", "2h", w.ID, "--until", "1m"),
		`Recovered 0 failed deliveries of `+w.ID+` created from \S+Z to \S+Z: they are due now\.`)
	g.fails(2, []string{"--since is required"}, nil, "recover", w.ID)
	g.fails(2, []string{"missing argument"}, nil, "recover", "--since", "1h")
	g.fails(1, []string{"400 Bad Request", "\n  since: "}, nil, "recover", w.ID, "--since", "soon")
	g.fails(1, []string{"404 Not Found"}, nil, "recover", "nope", "--since", "1h")
	g.fails(3, []string{"cannot reach the gateway"}, []string{"GATEWAY_URL=http://" + freeAddr(t)}, "recover", w.ID, "--since", "1h")

	var attempt struct {
		WebhookID  string `json:"webhookId"`
		EventType  string `json:"eventType"`
		StatusCode *int   `json:"statusCode"`
	}
	hits := rc.hits.Load()
	g.okJSON(&attempt, "test", w.ID, "--type", "task.state.updated")
	if attempt.StatusCode == nil || *attempt.StatusCode != 200 || attempt.EventType != "task.state.updated" || !strings.HasPrefix(attempt.WebhookID, "test_") {
		t.Errorf("test: %+v", attempt)
	}
	if rc.hits.Load() != hits+1 || rc.last.Load().(http.Header).Get("webhook-id") != attempt.WebhookID {
		t.Errorf("test: the receiver did not get the sample with webhook-id %s", attempt.WebhookID)
	}
	wantLines(t, "test on a terminal", g.onTerminal("test", w.ID),
		`Webhook-id  +test_\S+`, `Type  +transaction.state.updated`, `Result  +200`, `Duration  +[0-9.]+ms`, `Response  +answer from the receiver`)

	rc.status.Store(500)
	stdout, stderr, code := g.run("", nil, "test", w.ID)
	if code != 4 || !strings.Contains(stdout, `"statusCode":500`) || !strings.Contains(stderr, "gateway: test: the attempt failed: 500") {
		t.Errorf("test of a failing target: exit %d, want 4\n%s%s", code, stdout, stderr)
	}
	g.fails(1, []string{"400 Bad Request"}, nil, "test", w.ID, "--type", "nope")
	g.fails(1, []string{"404 Not Found"}, nil, "test", "nope")
	g.fails(2, []string{"missing argument"}, nil, "test")
	g.fails(3, []string{"cannot reach the gateway"}, []string{"GATEWAY_URL=http://" + freeAddr(t)}, "test", w.ID)
}

// listener is a running gateway listen.
type listener struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	wait           func() error
	hookID         string
}

var registeredLine = regexp.MustCompile(`Registered the temporary webhook (\S+) \(`)

// startListen runs gateway listen with args (stdout on a terminal when terminal is true) and
// waits until it has registered its webhook.
func (g *cliGateway) startListen(terminal bool, args ...string) *listener {
	g.t.Helper()
	l := &listener{stderr: &syncBuffer{}}
	l.cmd = g.cmd(context.Background(), nil, append([]string{"listen"}, args...)...)
	l.cmd.Stderr = l.stderr
	if terminal {
		l.stdout, l.wait = startOnTerminal(g.t, l.cmd)
	} else {
		l.stdout = &syncBuffer{}
		l.cmd.Stdout = l.stdout
		if err := l.cmd.Start(); err != nil {
			g.t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- l.cmd.Wait() }()
		l.wait = func() error { return <-done }
		g.t.Cleanup(func() {
			if l.cmd.ProcessState == nil {
				l.cmd.Process.Kill()
				<-done
			}
		})
	}
	waitUntil(g.t, "listen registered its webhook", func() bool {
		m := registeredLine.FindStringSubmatch(l.stderr.String())
		if m != nil {
			l.hookID = m[1]
		}
		return m != nil
	})
	return l
}

// stop sends sig and waits up to 20s for listen to exit; it returns the exit code.
func (l *listener) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	l.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { l.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("listen did not stop within 20s\n%s", l.stderr)
	}
	return l.cmd.ProcessState.ExitCode()
}

func TestCLIListen(t *testing.T) {
	g := startCLIGateway(t, cliGatewayConfig)
	type forwarded struct {
		method string
		header http.Header
		body   string
	}
	got := make(chan forwarded, 10)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- forwarded{r.Method, r.Header.Clone(), string(b)}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, "made")
	}))
	defer target.Close()

	l := g.startListen(false, "--forward", target.URL+"/hooks", "--events", "transaction.state.updated")
	var hook cliWebhook
	g.okJSON(&hook, "webhooks", "get", l.hookID)
	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+/$`).MatchString(hook.URL) || len(hook.Events) != 1 || hook.Events[0] != "transaction.state.updated" {
		t.Errorf("the temporary webhook: %+v", hook)
	}

	if _, stderr, code := g.run(`{"id": "l1", "type": "transaction.state.updated", "transaction": {"state": "completed"}}`, nil, "events", "send"); code != 0 {
		t.Fatalf("events send: %s", stderr)
	}
	var f forwarded
	select {
	case f = <-got:
	case <-time.After(15 * time.Second):
		t.Fatalf("nothing forwarded within 15s\n%s", l.stderr)
	}
	if f.method != "POST" || !strings.Contains(f.body, `"l1"`) || !strings.Contains(f.body, `"transaction": {"state": "completed"}`) ||
		f.header.Get("webhook-id") == "" || f.header.Get("webhook-timestamp") == "" || !strings.HasPrefix(f.header.Get("User-Agent"), "webhook-gateway/") ||
		f.header.Get("Content-Type") != "application/json" {
		t.Errorf("forwarded: %s %v %s", f.method, f.header, f.body)
	}
	var line struct {
		At         time.Time `json:"at"`
		WebhookID  string    `json:"webhookId"`
		EventType  string    `json:"eventType"`
		Status     int       `json:"status"`
		DurationMs float64   `json:"durationMs"`
	}
	waitUntil(t, "listen printed the delivery", func() bool { return strings.Contains(l.stdout.String(), "\n") })
	if err := json.Unmarshal([]byte(l.stdout.String()), &line); err != nil || line.WebhookID != f.header.Get("webhook-id") ||
		line.EventType != "transaction.state.updated" || line.Status != 201 || line.At.IsZero() {
		t.Errorf("listen's line: %v %+v\n%s", err, line, l.stdout)
	}
	waitUntil(t, "the gateway recorded the forward target's answer", func() bool {
		var d cliDelivery
		g.okJSON(&d, "deliveries", "get", f.header.Get("webhook-id"))
		return d.Status == "succeeded" && d.LastStatusCode != nil && *d.LastStatusCode == 201
	})

	if code := l.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("listen after SIGINT: exit %d\n%s", code, l.stderr)
	}
	if !strings.Contains(l.stderr.String(), "Deleted the temporary webhook "+l.hookID+".") {
		t.Errorf("listen did not say it deleted the webhook:\n%s", l.stderr)
	}
	g.fails(1, []string{"404 Not Found"}, nil, "webhooks", "get", l.hookID)
}

// On a terminal, listen prints a line per delivery; a forward target that cannot be reached
// gets the gateway a 502; SIGTERM deletes the webhook too.
func TestCLIListenOnATerminal(t *testing.T) {
	g := startCLIGateway(t, cliGatewayConfig)
	l := g.startListen(true, "--forward", "http://"+freeAddr(t)+"/hooks")
	var attempt struct {
		WebhookID    string `json:"webhookId"`
		StatusCode   *int   `json:"statusCode"`
		ResponseBody string `json:"responseBody"`
	}
	stdout, stderr, code := g.run("", nil, "test", l.hookID, "--type", "task.state.updated")
	if code != 4 || json.Unmarshal([]byte(stdout), &attempt) != nil || attempt.StatusCode == nil || *attempt.StatusCode != 502 ||
		!strings.Contains(attempt.ResponseBody, "cannot reach") {
		t.Errorf("test through listen to an unreachable target: exit %d, want 4 and a 502\n%s%s", code, stdout, stderr)
	}
	waitUntil(t, "listen printed the delivery", func() bool { return strings.Contains(terminalText(l.stdout), "\n") })
	wantLines(t, "listen on a terminal", terminalText(l.stdout),
		`\d\d:\d\d:\d\d\.\d{3}  `+regexp.QuoteMeta(attempt.WebhookID)+`  +task.state.updated  +502 \(.*connection refused\)  [0-9.]+ms`)
	if code := l.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("listen after SIGTERM: exit %d\n%s", code, l.stderr)
	}
	g.fails(1, []string{"404 Not Found"}, nil, "webhooks", "get", l.hookID)
}

// A gateway that refuses plain-http loopback targets refuses listen's webhook: listen says
// which settings allow it, and leaves nothing registered.
func TestCLIListenRefused(t *testing.T) {
	g := startCLIGateway(t, "admin:\n  tokens: ["+testToken+"]\nstore:\n  dsn: gw.db\n")
	g.fails(1, []string{"gateway: listen: 400 Bad Request", "\n  url: must start with https://", "require_https: false", `allowed_cidrs: ["127.0.0.0/8"]`}, nil,
		"listen", "--forward", "http://127.0.0.1:3000/hooks")
	var list []cliWebhook
	g.okJSON(&list, "webhooks", "list")
	if len(list) != 0 {
		t.Errorf("listen left webhooks behind: %+v", list)
	}
	g.fails(2, []string{"--forward is required"}, nil, "listen")
	g.fails(2, []string{"--listen: \"0.0.0.0:0\" is not a loopback address"}, nil, "listen", "--forward", "http://127.0.0.1:3000/", "--listen", "0.0.0.0:0")
	g.fails(2, []string{"is not an http:// or https:// URL"}, nil, "listen", "--forward", "localhost:3000")
	g.fails(3, []string{"cannot reach the gateway"}, []string{"GATEWAY_URL=http://" + freeAddr(t)}, "listen", "--forward", "http://127.0.0.1:3000/")
}

// Every command's --help shows its usage and the exit codes, on stdout, exit 0.
func TestCLIHelp(t *testing.T) {
	g := &cliGateway{t: t, exe: builtBinary(t)}
	for _, args := range [][]string{
		{"webhooks", "--help"}, {"webhooks", "list", "--help"}, {"webhooks", "get", "-h"}, {"webhooks", "create", "--help"},
		{"webhooks", "delete", "--help"}, {"events", "--help"}, {"events", "send", "--help"}, {"deliveries", "-h"},
		{"deliveries", "list", "--help"}, {"deliveries", "get", "--help"}, {"deliveries", "retry", "--help"},
		{"recover", "--help"}, {"test", "--help"}, {"listen", "--help"},
	} {
		stdout, stderr, code := g.run("", nil, args...)
		want := "usage: gateway " + strings.Join(args[:len(args)-1], " ")
		if code != 0 || !strings.HasPrefix(stdout, want) || !strings.Contains(stdout, "Exit codes: 0 success; 1 the gateway answered an error") || stderr != "" {
			t.Errorf("gateway %s: exit %d, want 0 with %q… and the exit codes\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
		}
	}
	g.fails(2, []string{"gateway: webhooks: which one?"}, nil, "webhooks")
	g.fails(2, []string{"gateway: webhooks list: gateway URL: \"ftp://x\" is not an http:// or https:// URL"}, nil, "webhooks", "list", "--url", "ftp://x")
}
