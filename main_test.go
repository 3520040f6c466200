package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the tests run the gateway as a real process: the test binary re-executes
// itself with GATEWAY_TEST_RUN_MAIN=1 and the gateway's own arguments.
func TestMain(m *testing.M) {
	if os.Getenv("GATEWAY_TEST_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	removeBuiltBinary()
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a process to write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// command returns the gateway as a process with args, run in dir with extra environment.
func command(t *testing.T, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GATEWAY_TEST_RUN_MAIN=1")
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// process is a running gateway.
type process struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string
	output *syncBuffer
	done   chan error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// spawn starts the gateway with args, listening on addr, and returns it without waiting.
func spawn(t *testing.T, dir, addr string, env []string, args ...string) *process {
	t.Helper()
	return startProcess(t, command(t, dir, append(env, "GATEWAY_LISTEN="+addr), args...), addr)
}

// startProcess starts cmd, a gateway listening on addr, and returns it without waiting.
func startProcess(t *testing.T, cmd *exec.Cmd, addr string) *process {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, cmd: cmd, base: "http://" + addr, output: out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// startGateway runs gateway serve with the config file and waits until it answers /healthz.
func startGateway(t *testing.T, dir, configPath string, env ...string) *process {
	t.Helper()
	p := spawn(t, dir, freeAddr(t), env, "serve", "--config", configPath)
	p.waitReady()
	return p
}

// waitReady waits up to 15s for /readyz to answer 200, failing if the process exits first.
func (p *process) waitReady() {
	p.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-p.done:
			p.done <- err
			p.t.Fatalf("gateway exited at start: %v\n%s", err, p.output)
		default:
		}
		if resp, err := http.Get(p.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	p.t.Fatalf("gateway not ready within 15s\n%s", p.output)
}

// stop sends sig and returns the exit code.
func (p *process) stop(sig os.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(20 * time.Second):
		p.t.Fatalf("gateway did not stop within 20s\n%s", p.output)
	}
	return -1
}

func (p *process) request(token, method, path, body string) (int, map[string]any) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.base+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(data, &m)
	return resp.StatusCode, m
}

func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const testToken = "process-test-token"

func TestServeRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, "admin:\n  tokens: [\"${GATEWAY_ADMIN_TOKEN}\"]\nstore:\n  dsn: data/gw.db\n")
	os.Mkdir(filepath.Join(dir, "data"), 0o755)
	env := "GATEWAY_ADMIN_TOKEN=" + testToken

	p := startGateway(t, dir, cfg, env)
	status, w := p.request(testToken, "POST", "/v1/webhooks", `{"url": "https://example.com/hooks"}`)
	if status != 201 {
		t.Fatalf("create webhook: %d %v", status, w)
	}
	status, r := p.request(testToken, "POST", "/api/WebhookRegistrations",
		`{"requestId":"r","callBackUrl":"https://example.com/cb","callBackUserName":"u","callBackPassword":"p","sourceSenderId":"s"}`)
	if status != 201 {
		t.Fatalf("create registration: %d %v", status, r)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\n%s", code, p.output)
	}

	p = startGateway(t, dir, cfg, env)
	if status, got := p.request(testToken, "GET", "/v1/webhooks/"+w["id"].(string), ""); status != 200 || got["url"] != "https://example.com/hooks" {
		t.Fatalf("webhook after restart: %d %v", status, got)
	}
	if status, got := p.request(testToken, "GET", "/api/WebhookRegistrations/"+r["registrationId"].(string), ""); status != 200 || got["callBackUserName"] != "u" {
		t.Fatalf("registration after restart: %d %v", status, got)
	}
	if code := p.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("SIGINT: exit code %d\n%s", code, p.output)
	}
}

// GATEWAY_ADMIN_LISTEN moves the management API and /metrics to a listener of their own.
func TestServeWithAdminListener(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, "admin:\n  tokens: [\"${GATEWAY_ADMIN_TOKEN}\"]\nstore:\n  dsn: gw.db\n")
	adminAddr := freeAddr(t)
	p := startGateway(t, dir, cfg, "GATEWAY_ADMIN_TOKEN="+testToken, "GATEWAY_ADMIN_LISTEN="+adminAddr)
	if status, _ := p.request(testToken, "GET", "/v1/webhooks", ""); status != 404 {
		t.Errorf("management API on listen: %d, want 404", status)
	}
	if status, _ := p.request("", "POST", "/v1/events", `{"type": "task.state.updated"}`); status != 202 {
		t.Errorf("ingest on listen: %d, want 202", status)
	}
	admin := &process{t: t, base: "http://" + adminAddr}
	if status, _ := admin.request(testToken, "POST", "/v1/webhooks", `{"url": "https://example.com/hooks"}`); status != 201 {
		t.Errorf("management API on admin.listen: %d, want 201", status)
	}
	for _, path := range []string{"/readyz", "/healthz", "/metrics"} {
		resp, err := http.Get(admin.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s on admin.listen: %d", path, resp.StatusCode)
		}
	}
	if !strings.Contains(p.output.String(), adminAddr) {
		t.Errorf("the log does not name the admin listener %s:\n%s", adminAddr, p.output)
	}
	if !strings.Contains(p.output.String(), `"msg":"traces","exporter":"none","destination":"nowhere: traces are not exported"`) {
		t.Errorf("the log does not say where traces go:\n%s", p.output)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\n%s", code, p.output)
	}
}

func TestSIGHUPSyncsDeclaredSubscriptions(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	header := "admin:\n  tokens: [" + testToken + "]\n"
	writeConfig(t, cfg, header+`subscriptions:
  - id: billing
    url: https://billing.example.com/hooks
  - id: audit
    url: https://audit.example.com/hooks
`)
	p := startGateway(t, dir, cfg)
	status, api := p.request(testToken, "POST", "/v1/webhooks", `{"url": "https://mine.example.com"}`)
	if status != 201 {
		t.Fatal(status, api)
	}
	if status, w := p.request(testToken, "GET", "/v1/webhooks/billing", ""); status != 200 || w["source"] != "file" {
		t.Fatalf("declared subscription at start: %d %v", status, w)
	}

	writeConfig(t, cfg, header+`subscriptions:
  - id: billing
    url: https://billing.example.com/v2
    headers: { X-Team: billing }
  - id: ledger
    url: https://ledger.example.com/hooks
    events: [task.state.updated]
`)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, p, func() bool {
		s1, _ := p.request(testToken, "GET", "/v1/webhooks/audit", "")
		s2, _ := p.request(testToken, "GET", "/v1/webhooks/ledger", "")
		return s1 == 404 && s2 == 200
	})
	if _, w := p.request(testToken, "GET", "/v1/webhooks/billing", ""); w["url"] != "https://billing.example.com/v2" {
		t.Fatalf("billing not updated: %v", w)
	}
	if s, _ := p.request(testToken, "GET", "/v1/webhooks/"+api["id"].(string), ""); s != 200 {
		t.Fatal("the sync removed an API subscription")
	}

	// New rules in the file apply at the next start: a subscription to a type only the new
	// file accepts is not synced.
	writeConfig(t, cfg, header+`events:
  types: [transaction.state.updated, task.state.updated, brand.new]
subscriptions:
  - id: billing
    url: https://billing.example.com/v2
    headers: { X-Team: billing }
  - id: newtype
    url: https://new.example.com/hooks
    events: [brand.new]
`)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, p, func() bool { return strings.Contains(p.output.String(), "rules the gateway runs with") })
	if s, _ := p.request(testToken, "GET", "/v1/webhooks/newtype", ""); s != 404 {
		t.Fatal("a subscription the running rules refuse was synced")
	}

	// A broken file changes nothing and is logged.
	writeConfig(t, cfg, header+"subscriptions:\n  - id: ledger\n    url: http://insecure.example.com\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, p, func() bool { return strings.Contains(p.output.String(), "must start with https://") })
	if s, _ := p.request(testToken, "GET", "/v1/webhooks/billing", ""); s != 200 {
		t.Fatal("a broken file's reload removed a subscription")
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func waitFor(t *testing.T, p *process, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("condition not met within 10s\n%s", p.output)
}

func TestGeneratedAdminToken(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	// The shipped gateway.yaml's form: the variable has a default, so it may be empty.
	writeConfig(t, cfg, "admin:\n  tokens: [\"${GATEWAY_ADMIN_TOKEN:-}\"]\n")
	p := startGateway(t, dir, cfg, "GATEWAY_ADMIN_TOKEN=")
	token := regexp.MustCompile(`Authorization: Bearer (gw_[0-9a-f]{48})`).FindStringSubmatch(p.output.String())
	if token == nil {
		t.Fatalf("no generated token printed:\n%s", p.output)
	}
	if s, _ := p.request("", "GET", "/v1/webhooks", ""); s != 401 {
		t.Fatalf("without a token: %d", s)
	}
	if s, _ := p.request(token[1], "GET", "/v1/webhooks", ""); s != 200 {
		t.Fatalf("with the printed token: %d", s)
	}
	if n := strings.Count(p.output.String(), token[1]); n != 1 {
		t.Fatalf("the token is printed %d times, want once", n)
	}
	p.stop(syscall.SIGTERM)
}

// A token list whose entries are all unset variables stops serve and fails validate, naming
// the variable: it never opens ingest, nor makes up an admin token.
func TestUnsetTokenVariableRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ file, want string }{
		{"admin:\n  tokens: [" + testToken + "]\ningest:\n  tokens: [\"${GATEWAY_TEST_UNSET_INGEST}\"]\n",
			"ingest.tokens[0]: ${GATEWAY_TEST_UNSET_INGEST} is not set; set it, or write ingest.tokens: [] to take events without a token"},
		{"admin:\n  tokens: [\"${GATEWAY_TEST_UNSET_ADMIN}\"]\n",
			"admin.tokens[0]: ${GATEWAY_TEST_UNSET_ADMIN} is not set; set it, or write admin.tokens: [] to have serve make a token for each run"},
	}
	for i, c := range cases {
		cfg := filepath.Join(dir, fmt.Sprintf("gateway%d.yaml", i))
		writeConfig(t, cfg, c.file)
		addr := freeAddr(t)
		for _, args := range [][]string{{"serve", "--config", cfg}, {"validate", "--config", cfg}} {
			cmd := command(t, dir, []string{"GATEWAY_LISTEN=" + addr}, args...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), c.want) {
				t.Errorf("gateway %s with %q: exit %d, want 1, and output naming the variable:\n%s", args[0], c.file, code, out)
			}
			if strings.Contains(string(out), "listening") || strings.Contains(string(out), "Authorization: Bearer") {
				t.Errorf("gateway %s with %q started:\n%s", args[0], c.file, out)
			}
		}
	}
}

func TestServeRefusesToTakeOverAnAPISubscription(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	header := "admin:\n  tokens: [" + testToken + "]\n"
	writeConfig(t, cfg, header)
	p := startGateway(t, dir, cfg)
	_, w := p.request(testToken, "POST", "/v1/webhooks", `{"url": "https://mine.example.com"}`)
	p.stop(syscall.SIGTERM)

	writeConfig(t, cfg, fmt.Sprintf("%ssubscriptions:\n  - id: %s\n    url: https://other.example.com\n", header, w["id"]))
	cmd := command(t, dir, []string{"GATEWAY_LISTEN=" + freeAddr(t)}, "serve", "--config", cfg)
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "owned by the API") {
		t.Fatalf("serve: %v\n%s", err, out)
	}
}

func TestValidateVersionAndUsage(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeConfig(t, good, "listen: 127.0.0.1:9000\n")
	bad := filepath.Join(dir, "bad.yaml")
	writeConfig(t, bad, "listen: 127.0.0.1:9000\nsubscriptions:\n  - id: a\n    url: http://x.example\n  - id: b\n    url: https://y.example\n    colour: red\n")

	cases := []struct {
		args []string
		env  []string
		code int
		want []string
	}{
		{[]string{"validate", "--config", good}, nil, 0, []string{"ok"}},
		{[]string{"validate"}, []string{"GATEWAY_CONFIG=" + good}, 0, []string{"ok"}},
		{[]string{"validate", "--config", bad}, nil, 1, []string{
			"subscriptions[0].url: must start with https://", "subscriptions[1].colour: unknown key"}},
		{[]string{"validate", "--config", filepath.Join(dir, "none.yaml")}, nil, 1, []string{"no such file"}},
		{[]string{"validate", "extra"}, nil, 2, []string{"unexpected argument"}},
		{[]string{"version"}, nil, 0, []string{"webhook-gateway "}},
		{[]string{"bench", "--help"}, nil, 0, []string{"usage: gateway bench", "-scenario"}},
		{[]string{"nonsense"}, nil, 2, []string{"unknown command", "usage:"}},
		{nil, nil, 2, []string{"usage:"}},
		{[]string{"serve", "--bogus"}, nil, 2, []string{"flag provided but not defined"}},
	}
	for _, c := range cases {
		cmd := command(t, dir, c.env, c.args...)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != c.code {
			t.Errorf("gateway %v: exit %d, want %d\n%s", c.args, code, c.code, out)
		}
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("gateway %v: output lacks %q:\n%s", c.args, w, out)
			}
		}
	}
	// The shipped file validates from the repository root.
	cmd := command(t, ".", nil, "validate")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("validate of ./gateway.yaml: %v %s", err, out)
	}
}

func TestServeWithoutConfigFileUsesDefaults(t *testing.T) {
	dir := t.TempDir()
	p := spawn(t, dir, freeAddr(t), []string{"GATEWAY_CONFIG=", "GATEWAY_ADMIN_TOKEN=" + testToken}, "serve")
	p.waitReady()
	// The shipped gateway.yaml is what runs: GATEWAY_ADMIN_TOKEN is the admin token.
	if s, _ := p.request(testToken, "GET", "/v1/webhooks", ""); s != 200 {
		t.Fatalf("GATEWAY_ADMIN_TOKEN not honoured without a file: %d", s)
	}
	if strings.Contains(p.output.String(), "Authorization: Bearer") {
		t.Errorf("a token was generated although GATEWAY_ADMIN_TOKEN is set:\n%s", p.output)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.output)
	}
	if _, err := os.Stat(filepath.Join(dir, "gateway.db")); err != nil {
		t.Fatalf("no gateway.db in the working directory: %v", err)
	}
	if !strings.Contains(p.output.String(), "default configuration") {
		t.Errorf("no word that defaults are used:\n%s", p.output)
	}
}

// Spans are flushed when the gateway stops: with the stdout exporter, the attempt span is in
// the output of a process that was sent SIGTERM right after the delivery.
func TestSpansFlushedAtShutdown(t *testing.T) {
	var got atomic.Int32
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1); w.WriteHeader(200) }))
	defer rc.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, "admin:\n  tokens: ["+testToken+"]\nsecurity: {require_https: false, allow_private_networks: true}\n"+
		"telemetry:\n  traces: {exporter: stdout}\nsubscriptions:\n  - id: r\n    url: "+rc.URL+"\n")
	p := startGateway(t, dir, cfg)
	if s, _ := p.request("", "POST", "/v1/events", `{"id": "span1", "type": "task.state.updated"}`); s != 202 {
		t.Fatalf("ingest: %d", s)
	}
	waitFor(t, p, func() bool { return got.Load() == 1 })
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	out := p.output.String()
	if !strings.Contains(out, `"Name":"POST"`) || !strings.Contains(out, `"webhook.event.id"`) {
		t.Fatalf("no attempt span in the output:\n%s", out)
	}
}

// One process per SQLite file: a second serve on the file a running gateway has open refuses
// to start, naming the file and the running one's pid, and leaves the first one serving.
func TestSecondServeOnTheSameFileRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, "admin:\n  tokens: ["+testToken+"]\nstore:\n  dsn: shared.db\n")
	first := startGateway(t, dir, cfg)

	cmd := command(t, dir, []string{"GATEWAY_LISTEN=" + freeAddr(t)}, "serve", "--config", cfg)
	done := make(chan struct{})
	var out []byte
	go func() { out, _ = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the second serve did not exit within 20s\n%s", out)
	}
	db := filepath.Join(dir, "shared.db")
	pid := strconv.Itoa(first.cmd.Process.Pid)
	if code := cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(string(out), db) || !strings.Contains(string(out), "process "+pid) {
		t.Fatalf("second serve: exit %d; want non-zero, naming %s and process %s:\n%s", code, db, pid, out)
	}
	// validate --check-store says the same.
	check := command(t, dir, nil, "validate", "--config", cfg, "--check-store")
	if out, _ := check.CombinedOutput(); check.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "process "+pid) {
		t.Fatalf("validate --check-store with the file in use: exit %d\n%s", check.ProcessState.ExitCode(), out)
	}
	if s, _ := first.request(testToken, "GET", "/readyz", ""); s != 200 {
		t.Fatalf("the first gateway after the second one's attempt: readyz %d", s)
	}
	if code := first.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("first gateway: exit %d\n%s", code, first.output)
	}
	// Once the first has stopped, the file is free.
	startGateway(t, dir, cfg).stop(syscall.SIGTERM)
}

// A database path that cannot work: serve and validate --check-store say why, naming the path;
// plain validate checks only the file.
func TestStorePathProblems(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, filepath.Join(dir, "a-file"), "x")
	cases := []struct{ dsn, want string }{
		{"missing/gw.db", "the directory " + filepath.Join(dir, "missing") + " does not exist"},
		{"a-file/gw.db", filepath.Join(dir, "a-file") + " is not a directory"},
	}
	for _, c := range cases {
		cfg := filepath.Join(dir, "gateway.yaml")
		writeConfig(t, cfg, "admin:\n  tokens: ["+testToken+"]\nstore:\n  dsn: "+c.dsn+"\n")
		for _, args := range [][]string{{"validate", "--config", cfg, "--check-store"}, {"serve", "--config", cfg}} {
			cmd := command(t, dir, []string{"GATEWAY_LISTEN=" + freeAddr(t)}, args...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), c.want) || strings.Contains(string(out), "(14)") {
				t.Errorf("gateway %v with store.dsn %s: exit %d, want 1 and %q:\n%s", args[0], c.dsn, code, c.want, out)
			}
		}
		cmd := command(t, dir, nil, "validate", "--config", cfg)
		if out, _ := cmd.CombinedOutput(); strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("validate without --check-store: %s", out)
		}
	}
	cfg := filepath.Join(dir, "good.yaml")
	writeConfig(t, cfg, "store:\n  dsn: data/gw.db\n")
	os.Mkdir(filepath.Join(dir, "data"), 0o755)
	cmd := command(t, dir, nil, "validate", "--config", cfg, "--check-store")
	if out, _ := cmd.CombinedOutput(); strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("validate --check-store of a usable path: %s", out)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "data")); len(entries) != 0 {
		t.Errorf("validate --check-store left %v behind", entries)
	}
}

// buildGateway builds the gateway binary as the Dockerfile does, with extra -ldflags, and with
// the test binary's -race and CGO_ENABLED so that the build reuses what the test's build
// compiled. It skips under -short.
func buildGateway(t *testing.T, ldflags string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	exe := filepath.Join(t.TempDir(), "gateway")
	if err := goBuild(ldflags, exe); err != nil {
		t.Fatal(err)
	}
	return exe
}

// goBuild builds the gateway binary into exe, as buildGateway says.
func goBuild(ldflags, exe string) error {
	args := []string{"build", "-ldflags", ldflags, "-o", exe, "."}
	var env []string
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "-race":
				if s.Value == "true" {
					args = append([]string{"build", "-race"}, args[1:]...)
				}
			case "CGO_ENABLED":
				env = append(env, "CGO_ENABLED="+s.Value)
			}
		}
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// The version set at build time is the one everywhere: gateway version, the start-up log
// line, the User-Agent of deliveries and the trace resource's service.version.
func TestOneVersionEverywhere(t *testing.T) {
	const version = "v0.0.0-versiontest"
	exe := buildGateway(t, "-X github.com/webhookgw/gateway/gateway.Version="+version)

	out, err := exec.Command(exe, "version").CombinedOutput()
	if err != nil || string(out) != "webhook-gateway "+version+"\n" {
		t.Errorf("gateway version: %v %q", err, out)
	}

	agents := make(chan string, 1)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case agents <- r.UserAgent():
		default:
		}
	}))
	defer rc.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, "admin:\n  tokens: ["+testToken+"]\nsecurity: {require_https: false, allow_private_networks: true}\n"+
		"telemetry:\n  traces: {exporter: stdout}\nsubscriptions:\n  - id: r\n    url: "+rc.URL+"\n")
	addr := freeAddr(t)
	cmd := exec.Command(exe, "serve", "--config", cfg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GATEWAY_LISTEN="+addr)
	p := startProcess(t, cmd, addr)
	p.waitReady()
	if s, _ := p.request("", "POST", "/v1/events", `{"id": "v1", "type": "task.state.updated"}`); s != 202 {
		t.Fatalf("ingest: %d", s)
	}
	select {
	case ua := <-agents:
		if ua != "webhook-gateway/"+version {
			t.Errorf("User-Agent %q, want webhook-gateway/%s", ua, version)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no delivery within 15s\n%s", p.output)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.output)
	}
	logs := p.output.String()
	if !strings.Contains(logs, `"msg":"listening"`) || !strings.Contains(logs, `"version":"`+version+`"`) {
		t.Errorf("the start-up log line does not name version %s:\n%s", version, logs)
	}
	if !strings.Contains(logs, `{"Key":"service.version","Value":{"Type":"STRING","Value":"`+version+`"}}`) {
		t.Errorf("the spans' resource has no service.version %s:\n%s", version, logs)
	}
}

// runGateway runs the gateway with args in dir and returns what it printed and its exit code.
func runGateway(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := command(t, dir, env, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// Every command takes -h and --help (help on stdout, exit 0); gateway --version is gateway
// version; an error is one line on stderr with exactly one "gateway: " in front.
func TestCommandLineConventions(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"serve", "-h"}, {"serve", "--help"}, {"validate", "-h"}, {"validate", "--help"},
		{"version", "-h"}, {"version", "--help"}, {"bench", "-h"}, {"bench", "--help"},
		{"healthcheck", "-h"}, {"healthcheck", "--help"},
	} {
		stdout, stderr, code := runGateway(t, dir, nil, args...)
		want := "usage: gateway "
		if len(args) > 1 {
			want += args[0]
		}
		if code != 0 || !strings.HasPrefix(stdout, want) || stderr != "" {
			t.Errorf("gateway %s: exit %d, want 0 with %q… on stdout and nothing on stderr\nstdout:\n%s\nstderr:\n%s",
				strings.Join(args, " "), code, want, stdout, stderr)
		}
	}

	version, _, _ := runGateway(t, dir, nil, "version")
	if stdout, stderr, code := runGateway(t, dir, nil, "--version"); code != 0 || stdout != version || !strings.HasPrefix(stdout, "webhook-gateway ") || stderr != "" {
		t.Errorf("gateway --version: exit %d, %q %q; want what gateway version prints, %q", code, stdout, stderr, version)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"serve", "--bogus"}, 2, "gateway: serve: flag provided but not defined: -bogus"},
		{[]string{"validate", "extra"}, 2, `gateway: validate: unexpected argument "extra"`},
		{[]string{"version", "extra"}, 2, `gateway: version: unexpected argument "extra"`},
		{[]string{"bench", "--bogus"}, 2, "gateway: bench: flag provided but not defined: -bogus"},
		{[]string{"nonsense"}, 2, `gateway: unknown command "nonsense"`},
		{[]string{"serve", "--config", "none.yaml"}, 1, "gateway: config: open none.yaml: no such file or directory"},
		{[]string{"validate", "--config", "none.yaml"}, 1, "gateway: config: open none.yaml: no such file or directory"},
	} {
		stdout, stderr, code := runGateway(t, dir, nil, c.args...)
		errorLines := 0 // lines that start with "gateway:"; the help that follows has none
		for _, line := range strings.Split(stderr, "\n") {
			if strings.HasPrefix(line, "gateway:") {
				errorLines++
			}
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if code != c.code || first != c.want || errorLines != 1 || stdout != "" {
			t.Errorf("gateway %s: exit %d, want %d, and one error line %q on stderr\nstdout:\n%s\nstderr:\n%s",
				strings.Join(c.args, " "), code, c.code, c.want, stdout, stderr)
		}
	}
}

// validate and serve find the configuration the same way: without --config,
// $GATEWAY_CONFIG or ./gateway.yaml, both take the built-in one, and report the same problem.
func TestValidateAndServeFindTheConfigurationAlike(t *testing.T) {
	dir := t.TempDir() // no gateway.yaml
	stdout, stderr, code := runGateway(t, dir, []string{"GATEWAY_CONFIG="}, "validate")
	if code != 0 || stdout != "ok\n" || !strings.Contains(stderr, "built-in configuration") {
		t.Errorf("validate without a file: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	const problem = "listen: must be host:port, such as 127.0.0.1:8080"
	env := []string{"GATEWAY_CONFIG=", "GATEWAY_LISTEN=nowhere"}
	stdout, stderr, code = runGateway(t, dir, env, "validate")
	if code != 1 || stdout != problem+"\n" {
		t.Errorf("validate of the built-in configuration with a bad GATEWAY_LISTEN: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = runGateway(t, dir, env, "serve")
	if code != 1 || stderr != "gateway: the built-in configuration (no ./gateway.yaml here): "+problem+"\n" || stdout != "" {
		t.Errorf("serve on the built-in configuration with a bad GATEWAY_LISTEN: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// A start that fails once the logger exists is logged at ERROR, once, and not printed again;
// no INFO "stopped".
func TestFailedStartLogsAtError(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		name, file, listen, want string
	}{
		{"address in use", "store:\n  dsn: gw.db\n", busy.Addr().String(), "address already in use"},
		{"store cannot open", "store:\n  dsn: no/such/dir/gw.db\n", freeAddr(t), "no/such/dir does not exist"},
	}
	for i, c := range cases {
		cfg := filepath.Join(dir, fmt.Sprintf("gateway%d.yaml", i))
		writeConfig(t, cfg, "admin:\n  tokens: ["+testToken+"]\n"+c.file)
		stdout, stderr, code := runGateway(t, dir, []string{"GATEWAY_LISTEN=" + c.listen}, "serve", "--config", cfg)
		var failed map[string]any
		for _, line := range strings.Split(stdout, "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["level"] == "ERROR" {
				failed = m
			}
		}
		if code != 1 || failed == nil || failed["msg"] != "start failed" || !strings.Contains(fmt.Sprint(failed["err"]), c.want) {
			t.Errorf("%s: exit %d, want 1 and an ERROR line \"start failed\" naming %q\nstdout:\n%s\nstderr:\n%s", c.name, code, c.want, stdout, stderr)
		}
		if n := strings.Count(stdout+stderr, c.want); n != 1 || strings.Contains(stdout, `"msg":"stopped"`) || stderr != "" {
			t.Errorf("%s: the error is reported %d times (want once, in the log), or a \"stopped\" line or stderr output is there\nstdout:\n%s\nstderr:\n%s", c.name, n, stdout, stderr)
		}
	}
}

// gateway healthcheck exits 0 when the configured gateway answers /readyz with 200, and 1 when
// nothing listens there, when it answers anything else, or when it does not answer in time.
func TestHealthcheck(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, "admin:\n  tokens: ["+testToken+"]\n")
	check := func(listen string) (stdout, stderr string, code int) {
		t.Helper()
		return runGateway(t, dir, []string{"GATEWAY_LISTEN=" + listen}, "healthcheck", "--config", cfg)
	}

	p := startGateway(t, dir, cfg)
	addr := strings.TrimPrefix(p.base, "http://")
	_, port, _ := net.SplitHostPort(addr)
	// The listen address as configured, and as a container's would be (all addresses).
	for _, listen := range []string{addr, "0.0.0.0:" + port, ":" + port} {
		if stdout, stderr, code := check(listen); code != 0 || stdout != "ok\n" || stderr != "" {
			t.Errorf("healthcheck of a running gateway at %s: exit %d\nstdout:\n%s\nstderr:\n%s", listen, code, stdout, stderr)
		}
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.output)
	}

	unready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer unready.Close()
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)

	for _, c := range []struct{ name, listen, want string }{
		{"a stopped gateway", addr, "connection refused"},
		{"a gateway not ready", strings.TrimPrefix(unready.URL, "http://"), "/readyz answered 503 Service Unavailable"},
		{"a gateway that does not answer", strings.TrimPrefix(hung.URL, "http://"), "deadline exceeded"},
	} {
		began := time.Now()
		stdout, stderr, code := check(c.listen)
		if code != 1 || !strings.HasPrefix(stderr, "gateway: healthcheck: ") || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("healthcheck of %s: exit %d, want 1 and %q on stderr\nstdout:\n%s\nstderr:\n%s", c.name, code, c.want, stdout, stderr)
		}
		if took := time.Since(began); took > healthcheckTimeout+5*time.Second {
			t.Errorf("healthcheck of %s took %v", c.name, took.Round(time.Millisecond))
		}
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":   "127.0.0.1:8080",
		"0.0.0.0:8080":     "127.0.0.1:8080",
		":8080":            "127.0.0.1:8080",
		"[::]:8080":        "[::1]:8080",
		"[::1]:9":          "[::1]:9",
		"gateway.local:80": "gateway.local:80",
		"10.1.2.3:8080":    "10.1.2.3:8080",
		"not an address":   "not an address",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}

// The image's HEALTHCHECK runs this binary's healthcheck (this machine has no Docker engine
// to build it), within a timeout longer than the command's own, and the image carries the
// OCI labels.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Instructions, continuation lines joined, comments dropped.
	var instr []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if more, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(line)
		if s := strings.Join(strings.Fields(cur.String()), " "); s != "" {
			instr = append(instr, s)
		}
		cur.Reset()
	}
	find := func(prefix string) string {
		for _, s := range instr {
			if strings.HasPrefix(s, prefix+" ") {
				return s
			}
		}
		t.Fatalf("Dockerfile: no %s", prefix)
		return ""
	}
	entry := find("ENTRYPOINT")
	exe := regexp.MustCompile(`\["([^"]+)"\]`).FindStringSubmatch(entry)
	if exe == nil {
		t.Fatalf("Dockerfile: ENTRYPOINT is not one binary in exec form: %s", entry)
	}
	health := find("HEALTHCHECK")
	if !strings.HasSuffix(health, `CMD ["`+exe[1]+`", "healthcheck"]`) {
		t.Errorf("Dockerfile: %s\ndoes not run %s healthcheck in exec form (distroless has no shell)", health, exe[1])
	}
	timeout := "none"
	if m := regexp.MustCompile(`--timeout=(\S+)`).FindStringSubmatch(health); m != nil {
		timeout = m[1]
	}
	if d, err := time.ParseDuration(timeout); err != nil || d <= healthcheckTimeout {
		t.Errorf("Dockerfile: %s\nwants a --timeout above the command's own %v", health, healthcheckTimeout)
	}
	labels := find("LABEL")
	for _, key := range []string{"title", "description", "source", "version", "revision"} {
		if !strings.Contains(labels, "org.opencontainers.image."+key+"=") {
			t.Errorf("Dockerfile: no org.opencontainers.image.%s label", key)
		}
	}
}
