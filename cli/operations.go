package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

const (
	recoverHelp = `usage: gateway recover SUBSCRIPTION --since D [--until D]

Schedules again, now, every failed delivery of SUBSCRIPTION created in the window
(POST /v1/webhooks/SUBSCRIPTION/recover): since <= created < until, until left out: up to now.
D is an RFC 3339 time (2026-12-01T05:00:00Z) or a duration before now (90m, 2h, 7d). The
deliveries keep their ids (so their webhook-id); pending and succeeded ones are not touched.
`
	testHelp = `usage: gateway test SUBSCRIPTION [--type TYPE]

Sends SUBSCRIPTION a sample event now, once, as a delivery attempt would (its headers, plugins
and security rules), and shows the attempt: status code or error, duration, the start of the
answer's body (POST /v1/webhooks/SUBSCRIPTION/test). Nothing is stored. TYPE left out: the
subscription's first event type.

Exit code 4 when the attempt failed (the target's answer was not 2xx, or it was not reached).
`
)

func (p *Program) recover(ctx context.Context, args []string) int {
	s := p.newSession("recover", recoverHelp, "url")
	since := s.fs.String("since", "", "recover deliveries created at or after this `TIME` (required)")
	until := s.fs.String("until", "", "recover deliveries created before this `TIME` (default: now)")
	if code, done := s.parse(args, 1, 1); done {
		return code
	}
	if *since == "" {
		return s.usageError("--since is required")
	}
	req := map[string]string{"since": *since}
	if *until != "" {
		req["until"] = *until
	}
	body, _ := json.Marshal(req)
	a, code, _ := s.do(ctx, request{method: http.MethodPost, path: "/v1/webhooks/" + url.PathEscape(s.args[0]) + "/recover", body: body, token: s.token})
	if code != ExitOK {
		return code
	}
	if !s.terminal() {
		s.printJSON(a.body)
		return ExitOK
	}
	var r struct {
		Recovered int     `json:"recovered"`
		Since     string  `json:"since"`
		Until     *string `json:"until"`
	}
	if code := s.decode(a.body, &r); code != ExitOK {
		return code
	}
	until2 := "now"
	if r.Until != nil {
		until2 = *r.Until
	}
	fmt.Fprintf(s.p.Stdout, "Recovered %d failed deliveries of %s created from %s to %s: they are due now.\n", r.Recovered, s.args[0], r.Since, until2)
	return ExitOK
}

func (p *Program) test(ctx context.Context, args []string) int {
	s := p.newSession("test", testHelp, "url")
	typ := s.fs.String("type", "", "the sample event's `TYPE` (default: the subscription's first)")
	if code, done := s.parse(args, 1, 1); done {
		return code
	}
	var body []byte
	if *typ != "" {
		body, _ = json.Marshal(map[string]string{"type": *typ})
	}
	a, code, _ := s.do(ctx, request{method: http.MethodPost, path: "/v1/webhooks/" + url.PathEscape(s.args[0]) + "/test", body: body, token: s.token})
	if code != ExitOK {
		return code
	}
	var r struct {
		WebhookID string `json:"webhookId"`
		EventType string `json:"eventType"`
		attempt
	}
	if code := s.decode(a.body, &r); code != ExitOK {
		return code
	}
	code = ExitOK
	if r.StatusCode == nil || *r.StatusCode < 200 || *r.StatusCode > 299 {
		code = ExitTestFailed
	}
	if code != ExitOK {
		defer fmt.Fprintf(s.p.Stderr, "gateway: test: the attempt failed: %s\n", result(r.StatusCode, r.Error))
	}
	if !s.terminal() {
		s.printJSON(a.body)
		return code
	}
	t := s.newTable()
	t.row("Webhook-id", r.WebhookID)
	t.row("Type", r.EventType)
	t.row("Result", result(r.StatusCode, r.Error))
	t.row("Duration", duration(r.DurationMs))
	t.row("Response", oneLine(deref(r.ResponseBody), 60))
	t.row("Trace", deref(r.TraceID))
	t.flush()
	return code
}
