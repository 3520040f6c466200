package gateway_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/webhookgw/gateway/config"
)

// The web console, end to end: a real headless Chromium, driven with chromedp, signs in to a
// real gateway (loopback listener, SQLite file) and works through the pages as a user would.
// The gateway delivers to loopback receivers whose answers the tests switch.
//
// Chromium is looked for on PATH and at /usr/bin/chromium; without it the test is skipped,
// unless GATEWAY_TEST_BROWSER=1 (CI) makes that a failure. Full-page screenshots of every page
// go to $GATEWAY_TEST_ARTIFACTS/console, else <repo>/artifacts/console.

const (
	// consoleTabTimeout bounds each subtest's work in its tab.
	consoleTabTimeout = 30 * time.Second
	// traceUI is telemetry.traces.ui_url in the tests that check trace links.
	traceUI = "http://127.0.0.1:16686/trace/{trace_id}"
)

// chromiumPath finds the browser, or skips (fails under GATEWAY_TEST_BROWSER=1).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (looked for chromium, chromium-browser and /usr/bin/chromium): " +
		"install it (apt-get install -y chromium) to run the console's browser tests"
	if os.Getenv("GATEWAY_TEST_BROWSER") == "1" {
		t.Fatal(msg + " (GATEWAY_TEST_BROWSER=1 requires them)")
	}
	t.Skip(msg)
	return ""
}

// consoleArtifacts returns the directory screenshots go to, made if need be.
func consoleArtifacts(t *testing.T) string {
	t.Helper()
	root := os.Getenv("GATEWAY_TEST_ARTIFACTS")
	if root == "" {
		root = filepath.Join("..", "artifacts") // go test runs in the package's directory
	}
	dir, err := filepath.Abs(filepath.Join(root, "console"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// settable is a receiver whose answer the test sets.
type settable struct {
	*receiver
	code atomic.Int32
}

func newSettable(t *testing.T, code int) *settable {
	t.Helper()
	s := &settable{}
	s.code.Store(int32(code))
	s.receiver = newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(s.code.Load()))
	})
	return s
}

// consoleEnv is a gateway that delivers to loopback receivers and gives up at once: no quick
// retry, an empty schedule (the first failed attempt fails the delivery for good) and error
// state after one failed attempt. With traces, attempts get trace ids (an SDK tracer provider
// with no exporter) and the console links them to traceUI.
func consoleEnv(t *testing.T, traces bool) *env {
	t.Helper()
	return consoleEnvOn(t, filepath.Join(t.TempDir(), "gateway.db"), "127.0.0.1:0", traces, nil)
}

// consoleEnvOn is consoleEnv on the SQLite file at path, listening on addr, with edit's say in
// the configuration.
func consoleEnvOn(t *testing.T, path, addr string, traces bool, edit func(*config.Config)) *env {
	t.Helper()
	var tp *sdktrace.TracerProvider
	if traces {
		tp = sdktrace.NewTracerProvider()
		t.Cleanup(func() { tp.Shutdown(context.Background()) })
	}
	return newEnvOn(t, path, addr, func(c *config.Config) {
		c.Security.RequireHTTPS = false
		c.Security.AllowPrivateNetworks = true
		c.Delivery.Jitter = 0
		c.Delivery.Timeout = 2 * time.Second
		c.Delivery.QuickRetries = 0
		c.Delivery.ErrorStateAfter = 1
		c.Delivery.Schedule = nil
		// Each tab has a browser context of its own, which closing closes its connections; should
		// one linger all the same, the gateway's stop does not wait long for it.
		c.ShutdownTimeout = 2 * time.Second
		if traces {
			c.Telemetry.Traces.UIURL = traceUI
		}
		if edit != nil {
			edit(c)
		}
	}, func(o *gatewayOptions) {
		o.PollInterval = 5 * time.Millisecond
		o.QuickRetryWait = time.Millisecond
		if tp != nil {
			o.TracerProvider = tp
		}
	})
}

// webhook returns GET /v1/webhooks/{id}.
func (e *env) webhook(t *testing.T, id string) map[string]any {
	t.Helper()
	r := e.do("GET", "/v1/webhooks/"+id, nil)
	expect(t, r, http.StatusOK)
	return r.json(t)
}

// browser is one Chromium for all the subtests; each opens a tab of its own.
type browser struct {
	ctx       context.Context
	artifacts string

	mu       sync.Mutex
	requests map[string]bool // "METHOD path" of every request the console made to its gateway
}

// requested notes a request a page made, if it went to the page's own gateway.
func (b *browser) requested(base, method, rawURL string) {
	u, err := url.Parse(rawURL)
	if err != nil || "http://"+u.Host != base {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests[method+" "+u.Path] = true
}

// tab is a browser tab on a gateway's console.
type tab struct {
	t       *testing.T
	tabCtx  context.Context // the tab's own context, without the subtest's timeout
	ctx     context.Context // tabCtx bounded by consoleTabTimeout
	base    string
	dir     string
	mu      sync.Mutex
	console []string // the page's uncaught exceptions and console errors
}

// open opens a tab for the subtest t; it closes when t ends (before t's gateway stops).
func (b *browser) open(t *testing.T, base string) *tab {
	t.Helper()
	// A browser context of its own: its own storage and connections, which closing it closes, so
	// that the gateway's shutdown does not wait for the browser's idle or preconnected sockets.
	tabCtx, closeTab := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(closeTab)
	ctx, cancel := context.WithTimeout(tabCtx, consoleTabTimeout)
	t.Cleanup(cancel)
	p := &tab{t: t, tabCtx: tabCtx, ctx: ctx, base: base, dir: b.artifacts}
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		t.Fatalf("opening a tab: %v", err)
	}
	requests := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for ev, err := range requests {
			if err != nil {
				return
			}
			b.requested(base, ev.Request.Method, ev.Request.URL)
		}
	}()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("watching the tab's requests: %v", err)
	}
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	calls := chromedp.Events(ctx, runtime.ConsoleAPICalled)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			if ev.ExceptionDetails != nil {
				p.note("exception: " + ev.ExceptionDetails.Text + exceptionDescription(ev.ExceptionDetails))
			}
		}
	}()
	go func() {
		for ev, err := range calls {
			if err != nil {
				return
			}
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					if len(a.Value) > 0 {
						args = append(args, string(a.Value))
					} else {
						args = append(args, a.Description)
					}
				}
				p.note(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		}
	}()
	// A page that throws or logs an error fails its subtest, which passed or not logs them.
	t.Cleanup(func() {
		p.mu.Lock()
		lines := slices.Clone(p.console)
		p.mu.Unlock()
		if !t.Failed() && len(lines) > 0 {
			t.Errorf("the page threw or logged an error:\n%s", strings.Join(lines, "\n"))
			return
		}
		for _, line := range lines {
			t.Logf("page %s", line)
		}
	})
	return p
}

func exceptionDescription(d *runtime.ExceptionDetails) string {
	if d != nil && d.Exception != nil && d.Exception.Description != "" {
		return ": " + d.Exception.Description
	}
	return ""
}

func (p *tab) note(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.console = append(p.console, line)
}

// fail ends the subtest, saving what the page looked like and its view's HTML first.
func (p *tab) fail(format string, args ...any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.tabCtx, 5*time.Second)
	defer cancel()
	name := "FAILED-" + strings.NewReplacer("/", "-", " ", "_").Replace(p.t.Name()) + ".png"
	if buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		if os.WriteFile(filepath.Join(p.dir, name), buf, 0o644) == nil {
			p.t.Logf("screenshot of the failure: %s", filepath.Join(p.dir, name))
		}
	}
	if html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.outerHTML : ""`)); err == nil {
		if len(html) > 4000 {
			html = html[:4000] + "…"
		}
		p.t.Logf("page at %s:\n%s", p.location(ctx), html)
	}
	p.t.Fatalf(format, args...)
}

func (p *tab) location(ctx context.Context) string {
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "?"
	}
	return loc
}

// do runs actions, failing the subtest with what if one fails.
func (p *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

// js evaluates a JavaScript expression in the page.
func js[T any](p *tab, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is true, within the subtest's timeout.
func (p *tab) waitFor(what, expr string) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(0)))
	if err != nil {
		p.fail("waiting for %s: %v", what, err)
	}
}

// text is the trimmed text of the first element sel matches, "" if none does.
func (p *tab) text(sel string) string {
	p.t.Helper()
	return js[string](p, fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").trim()`, sel))
}

// has reports whether sel matches an element.
func (p *tab) has(sel string) bool {
	p.t.Helper()
	return js[bool](p, fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
}

// count is how many elements sel matches.
func (p *tab) count(sel string) int {
	p.t.Helper()
	return js[int](p, fmt.Sprintf(`document.querySelectorAll(%q).length`, sel))
}

// goTo loads the console at the hash route (such as "#/deliveries"; "" for none).
func (p *tab) goTo(hash string) {
	p.t.Helper()
	p.do("loading the console", chromedp.Navigate(p.base+"/console"+hash))
}

// signIn signs in with token, with the Enter key or by clicking the button.
func (p *tab) signIn(token string, enter bool) {
	p.t.Helper()
	p.do("the sign-in form", chromedp.WaitVisible(chromedp.CSS(`form#signin input#token[type="password"]`)))
	p.do("typing the token", chromedp.SendKeys(chromedp.CSS("#token"), token))
	if enter {
		p.do("pressing Enter", chromedp.SendKeys(chromedp.CSS("#token"), kb.Enter))
	} else {
		p.do("clicking Sign in", chromedp.Click(chromedp.CSS(`form#signin button[type="submit"], form#signin input[type="submit"]`)))
	}
}

// signedIn waits for the console's navigation and sign-out button.
func (p *tab) signedIn() {
	p.t.Helper()
	p.do("the console's navigation after signing in",
		chromedp.WaitVisible(chromedp.CSS(`nav[aria-label="Console"] a[href="#/overview"]`)),
		chromedp.WaitVisible(chromedp.CSS(`nav[aria-label="Console"] a[href="#/subscriptions"]`)),
		chromedp.WaitVisible(chromedp.CSS(`nav[aria-label="Console"] a[href="#/deliveries"]`)),
		chromedp.WaitVisible(chromedp.CSS("#signout")))
}

// view waits until the view name has rendered its data.
func (p *tab) view(name string) {
	p.t.Helper()
	p.do("the "+name+" view to load",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`main#view[data-view=%q][data-loaded="true"]`, name))))
}

// click clicks the first element sel matches.
func (p *tab) click(sel string) {
	p.t.Helper()
	p.do("clicking "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// choose picks value in the select sel, as a user would (the page sees input and change).
func (p *tab) choose(sel, value string) {
	p.t.Helper()
	ok := js[bool](p, fmt.Sprintf(`(() => {
		const s = document.querySelector(%q);
		if (!s || ![...s.options].some((o) => o.value === %q)) return false;
		s.focus();
		s.value = %q;
		s.dispatchEvent(new Event("input", { bubbles: true }));
		s.dispatchEvent(new Event("change", { bubbles: true }));
		return true;
	})()`, sel, value, value))
	if !ok {
		p.fail("%s has no option %q", sel, value)
	}
}

// screenshot saves a full-page PNG of the tab as name.png.
func (p *tab) screenshot(name string) {
	p.t.Helper()
	p.noStrayValues(name)
	buf, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.fail("screenshot %s: %v", name, err)
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
}

// noStrayValues fails if the page shows a JavaScript value meant for no one: a text node
// reading null, undefined, NaN or [object Object].
func (p *tab) noStrayValues(page string) {
	p.t.Helper()
	stray := js[string](p, `(() => {
		const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
		for (let n = w.nextNode(); n; n = w.nextNode()) {
			const s = n.textContent.trim();
			if (["null", "undefined", "NaN", "[object Object]"].includes(s) && n.parentElement?.checkVisibility()) return s;
		}
		return "";
	})()`)
	if stray != "" {
		p.fail("the %s page shows a stray %q", page, stray)
	}
	// Every control has a label a screen reader can read, and every image a text.
	unlabelled := js[string](p, `(() => {
		for (const el of document.querySelectorAll("input, select, textarea, button")) {
			if (!el.checkVisibility()) continue;
			const named = (el.labels && el.labels.length > 0) || el.getAttribute("aria-label") ||
				(el.tagName === "BUTTON" && el.innerText.trim() !== "");
			if (!named) return el.outerHTML.slice(0, 200);
		}
		for (const el of document.querySelectorAll("svg[role=img]")) {
			if (!el.getAttribute("aria-label") && !el.querySelector("title")) return el.outerHTML.slice(0, 200);
		}
		return "";
	})()`)
	if unlabelled != "" {
		p.fail("the %s page has a control or image without a name: %s", page, unlabelled)
	}
}

// startsWith is a JavaScript test that sel's text starts with prefix.
func startsWith(sel, prefix string) string {
	return fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").trim().startsWith(%q)`, sel, prefix)
}

func TestConsoleBrowser(t *testing.T) {
	exe := chromiumPath(t)
	artifacts := consoleArtifacts(t)
	t.Logf("screenshots go to %s", artifacts)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	// The first run starts the browser and ties it to browserCtx, so it gets no timeout of its
	// own: a timer bounds it instead.
	stuck := time.AfterFunc(consoleTabTimeout, cancelAlloc)
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	stuck.Stop()
	b := &browser{ctx: browserCtx, artifacts: artifacts, requests: map[string]bool{}}
	// run runs a subtest, counting those that ran (go test -run may choose some).
	var subtests, ran int
	run := func(name string, f func(t *testing.T)) {
		subtests++
		t.Run(name, func(t *testing.T) {
			ran++
			f(t)
		})
	}
	// The console uses the management API as a script would: every request its pages made is
	// an operation of openapi.json.
	defer func() {
		if t.Failed() {
			return
		}
		raw, err := os.ReadFile("openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		d := loadAPIDoc(t, raw)
		ops := d.operations()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, req := range slices.Sorted(maps.Keys(b.requests)) {
			method, path, _ := strings.Cut(req, " ")
			tmpl, ok := d.template(path)
			if _, documented := ops[operation{method, tmpl}]; !ok || !documented {
				t.Errorf("the console made %s, which openapi.json does not describe", req)
			}
		}
		for _, want := range []string{"GET /console", "GET /v1/stats", "GET /v1/webhooks", "GET /v1/deliveries"} {
			if ran == subtests && !b.requests[want] { // all the pages were opened
				t.Errorf("the console never made %s (it made %v)", want, slices.Sorted(maps.Keys(b.requests)))
			}
		}
		t.Logf("the console made %d distinct requests: %v", len(b.requests), slices.Sorted(maps.Keys(b.requests)))
	}()

	// 1 and 8: signed in with the keyboard, the subscriptions page shows each subscription's
	// state, the one in error state with its reason.
	run("SignInWithEnterShowsErrorState", func(t *testing.T) {
		e := consoleEnv(t, false)
		failing := newSettable(t, http.StatusInternalServerError)
		gone := newSettable(t, http.StatusGone)
		ok := newSettable(t, http.StatusOK)
		errID := e.subscribe(t, failing.URL+"/hook", `, "events": ["task.state.updated"]`)
		goneID := e.subscribe(t, gone.URL+"/hook", `, "events": ["transaction.state.updated"]`)
		okID := e.subscribe(t, ok.URL+"/hook", "")
		expect(t, e.post(t, `{"id": "task-1", "type": "task.state.updated", "task": {"id": "t-1"}}`), http.StatusAccepted)
		expect(t, e.post(t, `{"id": "tx-1", "type": "transaction.state.updated", "transaction": {"id": "x-1"}}`), http.StatusAccepted)
		eventually(t, "the failing subscription in error state", func() bool {
			return e.webhook(t, errID)["isInErrorState"] == true
		})
		eventually(t, "the gone subscription deactivated", func() bool { return e.webhook(t, goneID)["isActive"] == false })
		eventually(t, "the healthy subscription got both events", func() bool { return ok.count() == 2 })

		p := b.open(t, e.base)
		p.goTo("")
		p.signIn(adminToken, true)
		p.signedIn()
		p.view("overview")
		for _, sel := range []string{"#queue-depth", "#oldest-age", "svg#chart-deliveries", "svg#chart-queue"} {
			if !p.has(sel) {
				p.fail("the overview has no %s", sel)
			}
		}
		p.screenshot("overview")

		p.click(`nav[aria-label="Console"] a[href="#/subscriptions"]`)
		p.view("subscriptions")
		row := func(id string) string { return fmt.Sprintf(`table#subscriptions tr[data-id=%q]`, id) }
		for id, state := range map[string]string{errID: "error", goneID: "deactivated", okID: "active"} {
			if got := p.text(row(id) + " .state"); !strings.HasPrefix(got, state) {
				p.fail("subscription %s: state %q, want it to start with %q", id, got, state)
			}
		}
		if got := p.text(row(errID) + " .reason"); !strings.Contains(got, "HTTP 500 from target") {
			p.fail("the subscription in error state gives the reason %q, want HTTP 500 from target", got)
		}
		p.screenshot("subscriptions")

		// The state filter keeps only the subscriptions in that state.
		p.choose("#state-filter", "error")
		p.waitFor("only the subscription in error state", fmt.Sprintf(`(() => {
			const v = document.querySelector("main#view");
			const ids = [...document.querySelectorAll("table#subscriptions tr[data-id]")].map((r) => r.dataset.id);
			return v.dataset.loaded === "true" && ids.length === 1 && ids[0] === %q;
		})()`, errID))

		p.click(fmt.Sprintf(`%s a[href="#/subscriptions/%s"]`, row(errID), errID))
		p.view("subscription")
		if got := p.text("#sub-state"); !strings.HasPrefix(got, "error") || !strings.Contains(got, "HTTP 500 from target") {
			p.fail("#sub-state %q, want error state with its reason", got)
		}
		if !p.has("#reactivate") {
			p.fail("a subscription in error state has no #reactivate button")
		}
		for _, sel := range []string{"#send-test", "select#test-type", "#recover", "input#recover-since"} {
			if !p.has(sel) {
				p.fail("the subscription page has no %s", sel)
			}
		}
		if n := p.count("table#sub-deliveries tr[data-id]"); n != 1 {
			p.fail("the subscription page lists %d deliveries, want 1", n)
		}
		p.screenshot("subscription")
	})

	// 2 and 3: a failed delivery shows its attempts, payload and trace link; once the receiver
	// is well again, Retry delivers it.
	run("FailedDeliveryRetried", func(t *testing.T) {
		e := consoleEnv(t, true)
		rc := newSettable(t, http.StatusInternalServerError)
		healthy := newSettable(t, http.StatusOK)
		e.subscribe(t, rc.URL+"/hook", `, "events": ["task.state.updated"]`)
		e.subscribe(t, healthy.URL+"/hook", `, "events": ["transaction.state.updated"]`)
		// A delivery that succeeds, for the status filter to leave out.
		expect(t, e.post(t, `{"id": "ev-ok", "type": "transaction.state.updated"}`), http.StatusAccepted)
		eventually(t, "the other delivery succeeded", func() bool { return e.deliveryStatus(t, "ev-ok") == "succeeded" })
		expect(t, e.post(t, `{"id": "ev-fail", "type": "task.state.updated", "task": {"id": "t-42", "state": "blocked"}}`), http.StatusAccepted)
		eventually(t, "the delivery failed", func() bool { return e.deliveryStatus(t, "ev-fail") == "failed" })
		d := e.deliveryOf(t, "ev-fail")
		id := d["id"].(string)
		log := attemptsMatchLog(t, d)
		if len(log) != 1 {
			t.Fatalf("attempt log %v, want one attempt", log)
		}
		traceID, _ := log[0].(map[string]any)["traceId"].(string)
		if traceID == "" {
			t.Fatalf("the attempt has no trace id: %v", log[0])
		}

		p := b.open(t, e.base)
		p.goTo("#/deliveries")
		p.signIn(adminToken, false)
		p.signedIn()
		p.view("deliveries")
		for _, sel := range []string{"select#status-filter", "#subscription-filter", "#type-filter"} {
			if !p.has(sel) {
				p.fail("the deliveries page has no %s", sel)
			}
		}
		row := fmt.Sprintf(`table#deliveries tr[data-id=%q]`, id)
		if got := p.text(row + " .status"); !strings.Contains(got, "failed") {
			p.fail("delivery %s: status %q, want failed", id, got)
		}
		okID := e.deliveryOf(t, "ev-ok")["id"].(string)
		if got := p.text(fmt.Sprintf(`table#deliveries tr[data-id=%q] .status`, okID)); !strings.Contains(got, "succeeded") {
			p.fail("delivery %s: status %q, want succeeded", okID, got)
		}
		p.choose("#status-filter", "failed")
		p.waitFor("the failed delivery, filtered", fmt.Sprintf(`(() => {
			const ids = [...document.querySelectorAll("table#deliveries tr[data-id]")].map((r) => r.dataset.id);
			return document.querySelector("main#view").dataset.loaded === "true" && ids.length === 1 && ids[0] === %q;
		})()`, id))
		p.screenshot("deliveries")

		p.click(fmt.Sprintf(`%s a[href="#/deliveries/%s"]`, row, id))
		p.view("delivery")
		if got := p.text("#delivery-status"); got != "failed" {
			p.fail("#delivery-status %q, want failed", got)
		}
		if n := p.count("table#attempts tr.attempt"); n != 1 {
			p.fail("%d attempt rows, want 1", n)
		}
		if got := p.text("table#attempts tr.attempt"); !strings.Contains(got, "500") {
			p.fail("the attempt row %q does not show the 500", got)
		}
		href := js[string](p, `document.querySelector("table#attempts tr.attempt a.trace")?.getAttribute("href") ?? ""`)
		if !strings.HasPrefix(href, "http://127.0.0.1:16686/trace/") || !strings.Contains(href, traceID) {
			p.fail("the attempt's trace link is %q, want telemetry.traces.ui_url with trace id %s", href, traceID)
		}
		payload := p.text("pre#payload")
		for _, want := range []string{`"ev-fail"`, `"t-42"`, `"blocked"`} {
			if !strings.Contains(payload, want) {
				p.fail("the payload %q lacks %s", payload, want)
			}
		}
		p.screenshot("delivery")

		rc.code.Store(http.StatusOK)
		p.click("#retry")
		p.waitFor("the retried delivery to succeed", startsWith("#delivery-status", "succeeded")+
			` && document.querySelectorAll("table#attempts tr.attempt").length === 2`)
		if got := p.text("#delivery-status"); got != "succeeded" {
			p.fail("#delivery-status %q, want succeeded", got)
		}
		if n := rc.count(); n != 2 {
			t.Fatalf("the receiver got %d requests, want 2 (the failure and the retry)", n)
		}
		if got := rc.request(1); !strings.Contains(string(got.body), `"ev-fail"`) || got.header.Get("Webhook-Id") != id {
			t.Fatalf("the retry delivered %s (webhook-id %q), want event ev-fail as delivery %s", got.body, got.header.Get("Webhook-Id"), id)
		}
		if s := e.deliveryStatus(t, "ev-fail"); s != "succeeded" {
			t.Fatalf("the API says the delivery is %s", s)
		}
	})

	// 4: a subscription that answered 410 Gone is deactivated; Reactivate makes it active again.
	run("ReactivateDeactivated", func(t *testing.T) {
		e := consoleEnv(t, false)
		rc := newSettable(t, http.StatusGone)
		id := e.subscribe(t, rc.URL+"/hook", "")
		expect(t, e.post(t, `{"id": "gone-1", "type": "task.state.updated"}`), http.StatusAccepted)
		eventually(t, "deactivated by 410 Gone", func() bool { return e.webhook(t, id)["isActive"] == false })

		p := b.open(t, e.base)
		p.goTo("#/subscriptions/" + id)
		p.signIn(adminToken, false)
		p.signedIn()
		p.view("subscription")
		if got := p.text("#sub-state"); !strings.HasPrefix(got, "deactivated") {
			p.fail("#sub-state %q, want deactivated", got)
		}
		rc.code.Store(http.StatusOK)
		p.click("#reactivate")
		p.waitFor("the subscription to show active", startsWith("#sub-state", "active"))
		p.waitFor("the reactivate button to go", `document.querySelector("#reactivate") === null`)
		if got := p.text("#action-result"); got == "" {
			p.fail("reactivating said nothing in #action-result")
		}
		if w := e.webhook(t, id); w["isActive"] != true || w["deactivatedAt"] != nil {
			t.Fatalf("after Reactivate, the API says %v", w)
		}
		// Signing out forgets the token and shows the sign-in form, not the data.
		p.click("#signout")
		p.do("the sign-in form after signing out", chromedp.WaitVisible(chromedp.CSS("form#signin input#token")))
		if p.has("main#view[data-loaded]") || p.has("#sub-state") {
			p.fail("signed out, the page still shows the subscription")
		}
		if n := js[int](p, `sessionStorage.length`); n != 0 {
			p.fail("signed out, sessionStorage still holds %d items", n)
		}
		// It receives again.
		expect(t, e.post(t, `{"id": "back-1", "type": "task.state.updated"}`), http.StatusAccepted)
		eventually(t, "delivered after reactivation", func() bool { return e.deliveryStatus(t, "back-1") == "succeeded" })
	})

	// The subscription page's other actions: a test event shows the attempt's result, and
	// recovering the failed deliveries since a time sends them again.
	run("SendTestAndRecover", func(t *testing.T) {
		e := consoleEnv(t, false)
		rc := newSettable(t, http.StatusInternalServerError)
		id := e.subscribe(t, rc.URL+"/hook", `, "events": ["task.state.updated", "transaction.state.updated"]`)
		for _, ev := range []string{"down-1", "down-2"} {
			expect(t, e.post(t, `{"id": "`+ev+`", "type": "task.state.updated"}`), http.StatusAccepted)
			eventually(t, ev+" failed", func() bool { return e.deliveryStatus(t, ev) == "failed" })
		}

		p := b.open(t, e.base)
		p.goTo("#/subscriptions/" + id)
		p.signIn(adminToken, false)
		p.signedIn()
		p.view("subscription")
		rc.code.Store(http.StatusOK)
		p.choose("#test-type", "transaction.state.updated")
		p.click("#send-test")
		p.waitFor("the test's result", `(document.querySelector("#action-result")?.innerText ?? "").includes("HTTP 200")`)
		if got := p.text("#action-result"); !strings.Contains(got, "transaction.state.updated") {
			p.fail("the test's result %q does not name its type", got)
		}
		if n := rc.count(); n != 3 {
			t.Fatalf("the receiver got %d requests, want 3 (two failures and the test)", n)
		}
		if got := string(rc.request(2).body); !strings.Contains(got, `"test_`) || !strings.Contains(got, "transaction.state.updated") {
			t.Fatalf("the test delivered %s", got)
		}

		p.do("typing the recovery's start", chromedp.SendKeys(chromedp.CSS("#recover-since"), "2h"))
		p.click("#recover")
		p.waitFor("the recovery's result", `(document.querySelector("#action-result")?.innerText ?? "").includes("Rescheduled 2 failed deliveries")`)
		for _, ev := range []string{"down-1", "down-2"} {
			eventually(t, ev+" delivered after the recovery", func() bool { return e.deliveryStatus(t, ev) == "succeeded" })
		}
		p.screenshot("subscription-actions")
	})

	// 5: a wrong token is refused and shows nothing; a route opened without signing in asks for
	// a token first.
	run("WrongTokenAndSignedOut", func(t *testing.T) {
		e := consoleEnv(t, false)
		rc := newSettable(t, http.StatusOK)
		subID := e.subscribe(t, rc.URL+"/hook", "")
		expect(t, e.post(t, `{"id": "secret-event", "type": "task.state.updated"}`), http.StatusAccepted)
		eventually(t, "delivered", func() bool { return e.deliveryStatus(t, "secret-event") == "succeeded" })
		deliveryID := e.deliveryOf(t, "secret-event")["id"].(string)

		p := b.open(t, e.base)
		noData := func(when string) {
			t.Helper()
			if p.has("main#view[data-loaded]") || p.has("table#deliveries") || p.has("table#subscriptions") {
				p.fail("%s: the page shows data", when)
			}
			body := js[string](p, `document.body.innerText`)
			for _, secret := range []string{subID, deliveryID, "secret-event"} {
				if strings.Contains(body, secret) {
					p.fail("%s: the page shows %s", when, secret)
				}
			}
			if js[bool](p, `(() => { const n = document.querySelector('nav[aria-label="Console"]'); return !!n && n.checkVisibility(); })()`) {
				p.fail("%s: the console's navigation shows", when)
			}
		}

		p.goTo("#/deliveries")
		p.do("the sign-in form", chromedp.WaitVisible(chromedp.CSS(`form#signin input#token[type="password"]`)))
		noData("opened #/deliveries without signing in")

		p.signIn("not-the-admin-token", false)
		p.waitFor("the refusal", `(document.querySelector("#signin-error")?.textContent ?? "").includes("refused")`)
		p.do("the sign-in form after the refusal", chromedp.WaitVisible(chromedp.CSS("form#signin input#token")))
		noData("after a wrong token")
		p.screenshot("signin-error")
	})

	// The console shows what it is given as text: markup in a payload or a response runs
	// nothing, and fields named like secrets show as ********, whatever their values' types.
	run("SecretsAndMarkup", func(t *testing.T) {
		e := consoleEnv(t, false)
		rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error": "<script>window.__pwned = 2</script>", "token": 987654321012, "apiKey": {"value": "ak-nested-1"}}`)
		})
		e.subscribe(t, rc.URL+"/hook", "")
		expect(t, e.post(t, `{"id": "ev-markup", "type": "task.state.updated",
			"note": "<img src=x onerror=\"window.__pwned = 3\">",
			"customer": {"password": "hunter2-pw", "apiKey": "sk-live-777", "cards": [{"secret": 42424242}]}}`), http.StatusAccepted)
		eventually(t, "the delivery failed", func() bool { return e.deliveryStatus(t, "ev-markup") == "failed" })
		id := e.deliveryOf(t, "ev-markup")["id"].(string)

		p := b.open(t, e.base)
		p.goTo("#/deliveries/" + id)
		p.signIn(adminToken, false)
		p.signedIn()
		p.view("delivery")
		p.waitFor("the attempt", `document.querySelectorAll("table#attempts tr.attempt").length === 1`)
		if got := p.text("table#attempts tr.attempt pre.excerpt"); !strings.Contains(got, "<script>window.__pwned = 2</script>") {
			p.fail("the response excerpt %q does not show the markup as text", got)
		}
		if got := p.text("pre#payload"); !strings.Contains(got, `<img src=x onerror=\"window.__pwned = 3\">`) || !strings.Contains(got, "********") {
			p.fail("the payload %q does not show the markup as text and the secrets as ********", got)
		}
		if js[bool](p, `window.__pwned !== undefined || document.querySelector("#view img, #view script") !== null`) {
			p.fail("markup from the payload or the response became part of the page")
		}
		body := js[string](p, `document.body.innerText`)
		for _, secret := range []string{"987654321012", "ak-nested-1", "hunter2-pw", "sk-live-777", "42424242"} {
			if strings.Contains(body, secret) {
				p.fail("the page shows the secret %s", secret)
			}
		}
		p.screenshot("delivery-secrets")
	})

	// 7: on a narrow screen the subscriptions page does not scroll sideways.
	run("NarrowScreen", func(t *testing.T) {
		e := consoleEnv(t, false)
		failing := newSettable(t, http.StatusInternalServerError)
		ok := newSettable(t, http.StatusOK)
		long := "/hooks/" + strings.Repeat("a-rather-long-path-segment-", 4) + "?tenant=" + strings.Repeat("x", 40)
		errID := e.subscribe(t, failing.URL+long, `, "events": ["task.state.updated"]`)
		e.subscribe(t, ok.URL+long, "")
		e.subscribe(t, ok.URL+"/short", "")
		expect(t, e.post(t, `{"id": "n-1", "type": "task.state.updated"}`), http.StatusAccepted)
		eventually(t, "error state", func() bool { return e.webhook(t, errID)["isInErrorState"] == true })

		p := b.open(t, e.base)
		p.do("a 360x740 viewport", chromedp.EmulateViewport(360, 740))
		p.goTo("#/subscriptions")
		p.signIn(adminToken, true)
		p.signedIn()
		p.view("subscriptions")
		if n := p.count("table#subscriptions tr[data-id]"); n != 3 {
			p.fail("%d subscriptions listed, want 3", n)
		}
		if w := js[int](p, `window.innerWidth`); w != 360 {
			p.fail("the viewport is %d wide, want 360", w)
		}
		if sw, w := js[int](p, `document.documentElement.scrollWidth`), js[int](p, `window.innerWidth`); sw > w {
			p.fail("the subscriptions page scrolls sideways at 360px: scrollWidth %d > innerWidth %d", sw, w)
		}
		p.screenshot("narrow")
	})
}

// 6: admin.console off means no console; with admin.listen the console is on the admin
// listener only. Plain HTTP: no browser needed.
func TestConsoleServing(t *testing.T) {
	t.Run("Off", func(t *testing.T) {
		e := newEnv(t, func(c *config.Config) { c.Admin.Console = false })
		for _, path := range []string{"/console", "/console/console.js", "/console/console.css"} {
			if r := send(t, e.base, "", "GET", path, ""); r.status != http.StatusNotFound {
				t.Errorf("GET %s with the console off: %d, want 404\n%.300s", path, r.status, r.body)
			}
		}
		expect(t, e.do("GET", "/v1/webhooks", nil), http.StatusOK) // the API is still there
	})
	t.Run("On", func(t *testing.T) {
		e := newEnv(t, nil)
		r := send(t, e.base, "", "GET", "/console", "")
		expect(t, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("GET /console: Content-Type %q", ct)
		}
	})
	t.Run("AdminListener", func(t *testing.T) {
		e := newEnv(t, func(c *config.Config) { c.Admin.Listen = "127.0.0.1:0" })
		r := send(t, e.admin, "", "GET", "/console", "")
		expect(t, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(r.body), "/console/console.js") {
			t.Fatalf("GET /console on the admin listener: %s\n%.300s", ct, r.body)
		}
		expect(t, send(t, e.admin, "", "GET", "/console/console.js", ""), http.StatusOK)
		for _, path := range []string{"/console", "/console/console.js"} {
			if r := send(t, e.base, "", "GET", path, ""); r.status != http.StatusNotFound {
				t.Errorf("GET %s on the main listener: %d, want 404\n%.300s", path, r.status, r.body)
			}
		}
	})
}
