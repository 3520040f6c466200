package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

const listenHelp = `usage: gateway listen --forward URL [--events TYPE]... [--listen 127.0.0.1:0]

Relays a running gateway's deliveries to a server on this machine, to develop a receiver
against real deliveries without exposing it: listen starts an HTTP server on a loopback
address, registers a temporary webhook on the gateway pointing at it
(http://127.0.0.1:PORT/), and forwards each delivery it receives (method, body, the webhook-*
and other headers) to --forward. The gateway gets the forward target's status and body as the
delivery's answer, 502 when the target cannot be reached. Each delivery is one line on stdout:
time, webhook-id, event type, the target's status (or error), duration; JSON lines when stdout
is not a terminal or with --json. Nothing goes through a service outside this machine.

On SIGINT (Ctrl-C) or SIGTERM the webhook is deleted, and listen exits 0; it is deleted too when
the local server fails (exit 1).

The gateway must run on this machine (127.0.0.1 is its own loopback) and accept plain-http
loopback targets, as a development gateway's gateway.yaml can:
  security:
    require_https: false
    allowed_cidrs: ["127.0.0.0/8"]   # or allow_private_networks: true
Otherwise it refuses the webhook with a 400 naming url (exit 1).
`

// listenHint says which settings let a gateway deliver to listen's server.
const listenHint = `gateway listen needs a gateway that delivers over plain HTTP to this machine's loopback
address: in its gateway.yaml (for a development gateway only), set
  security:
    require_https: false
    allowed_cidrs: ["127.0.0.0/8"]   # or allow_private_networks: true
and restart it. security.allowed_hosts, when set, must list 127.0.0.1 too.
`

func (p *Program) listen(ctx context.Context, args []string) int {
	s := p.newSession("listen", listenHelp, "url")
	forward := s.fs.String("forward", "", "forward deliveries to this `URL` (required), such as http://localhost:3000/hooks")
	var events stringList
	s.fs.Var(&events, "events", "an event `TYPE` the webhook receives (repeat, or separate with commas; none: events.default)")
	addr := s.fs.String("listen", "127.0.0.1:0", "the local server's loopback `ADDRESS` (port 0: any free one)")
	forwardTimeout := s.fs.Duration("forward-timeout", 10*time.Second, "give up on the forward target after this long (the gateway then gets 502)")
	if code, done := s.parse(args, 0, 0); done {
		return code
	}
	target, err := url.Parse(*forward)
	switch {
	case *forward == "":
		return s.usageError("--forward is required")
	case err != nil:
		return s.usageError("--forward: %v", err)
	case (target.Scheme != "http" && target.Scheme != "https") || target.Host == "":
		return s.usageError("--forward %q is not an http:// or https:// URL", *forward)
	case *forwardTimeout <= 0:
		return s.usageError("--forward-timeout must be more than 0")
	}
	if err := checkLoopback(*addr); err != nil {
		return s.usageError("--listen: %v", err)
	}
	var types []string
	for _, e := range events {
		for _, t := range strings.Split(e, ",") {
			if t = strings.TrimSpace(t); t != "" {
				types = append(types, t)
			}
		}
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return s.errorf(ExitAPI, "%v", err)
	}
	defer ln.Close()
	hookURL := "http://" + ln.Addr().String() + "/"

	body, _ := json.Marshal(struct {
		URL    string   `json:"url"`
		Events []string `json:"events,omitempty"`
	}{hookURL, types})
	a, code, err := s.do(ctx, request{method: http.MethodPost, path: "/v1/webhooks", body: body, token: s.token})
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusBadRequest && namesField(ae.problem, "url") {
		fmt.Fprint(s.p.Stderr, "\n"+listenHint)
	}
	if code != ExitOK {
		return code
	}
	var hook webhook
	if code := s.decode(a.body, &hook); code != ExitOK {
		return code
	}
	fmt.Fprintf(s.p.Stderr, "Registered the temporary webhook %s (%s, events: %s).\n"+
		"Forwarding its deliveries to %s. Ctrl-C deletes the webhook and stops.\n",
		hook.ID, hookURL, strings.Join(hook.Events, ", "), target.Redacted())

	r := &relay{
		forward: target.String(),
		client: &http.Client{
			Timeout:       *forwardTimeout,
			Transport:     &http.Transport{Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		out:  s.p.Stdout,
		json: !s.terminal(),
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	code = ExitOK
	select {
	case <-ctx.Done():
	case err := <-served:
		s.errorf(ExitAPI, "the local server failed: %v", err)
		code = ExitAPI
	}
	// The webhook goes first, so that the gateway stops sending; then the server finishes
	// the deliveries in flight.
	delCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, delCode, err := s.do(delCtx, request{method: http.MethodDelete, path: "/v1/webhooks/" + url.PathEscape(hook.ID), token: s.token})
	switch {
	case delCode == ExitOK:
		fmt.Fprintf(s.p.Stderr, "Deleted the temporary webhook %s.\n", hook.ID)
	case errors.As(err, &ae) && ae.status == http.StatusNotFound:
		fmt.Fprintf(s.p.Stderr, "The temporary webhook %s was deleted already.\n", hook.ID)
	default:
		fmt.Fprintf(s.p.Stderr, "The temporary webhook %s is still registered: delete it with\n  gateway webhooks delete %s\n", hook.ID, hook.ID)
		if code == ExitOK {
			code = delCode
		}
	}
	shutCtx, cancelShut := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShut()
	srv.Shutdown(shutCtx)
	return code
}

// checkLoopback refuses a listen address that is not on loopback: deliveries stay on this
// machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address such as 127.0.0.1:0: the local server serves only this machine", addr)
	}
	return nil
}

// namesField reports whether a problem has an error about field.
func namesField(p problem, field string) bool {
	for _, fe := range p.Errors {
		if fe.Field == field {
			return true
		}
	}
	return false
}

// relay forwards each request to forward and answers with forward's answer.
type relay struct {
	forward string
	client  *http.Client
	json    bool

	mu  sync.Mutex // serializes writes to out
	out io.Writer
}

// hopHeaders are not forwarded either way (RFC 9110, 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func copyHeaders(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
	for _, k := range hopHeaders {
		dst.Del(k)
	}
	for _, k := range src.Values("Connection") {
		for _, name := range strings.Split(k, ",") {
			dst.Del(strings.TrimSpace(name))
		}
	}
}

func (r *relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 16<<20))
	if err != nil {
		http.Error(w, "gateway listen: reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	line := deliveryLine{At: start, WebhookID: req.Header.Get("webhook-id"), EventType: eventType(body)}
	out, err := http.NewRequestWithContext(req.Context(), req.Method, r.forward, bytes.NewReader(body))
	if err == nil {
		copyHeaders(out.Header, req.Header)
		var resp *http.Response
		if resp, err = r.client.Do(out); err == nil {
			copyHeaders(w.Header(), resp.Header)
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
			resp.Body.Close()
			line.Status = resp.StatusCode
		}
	}
	if err != nil {
		line.Status, line.Error = http.StatusBadGateway, unwrapURLError(err).Error()
		http.Error(w, "gateway listen: cannot reach "+r.forward+": "+line.Error, http.StatusBadGateway)
	}
	line.DurationMs = float64(time.Since(start).Microseconds()) / 1000
	r.print(line)
}

// deliveryLine is what listen prints of one delivery.
type deliveryLine struct {
	At         time.Time `json:"at"`
	WebhookID  string    `json:"webhookId"`
	EventType  string    `json:"eventType"`
	Status     int       `json:"status"`
	Error      string    `json:"error,omitempty"`
	DurationMs float64   `json:"durationMs"`
}

func (r *relay) print(l deliveryLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.json {
		b, _ := json.Marshal(l)
		r.out.Write(append(b, '\n'))
		return
	}
	status := fmt.Sprint(l.Status)
	if l.Error != "" {
		status += " (" + l.Error + ")"
	}
	fmt.Fprintf(r.out, "%s  %-36s  %-26s  %s  %s\n", l.At.Format("15:04:05.000"), or(l.WebhookID, "-"), or(l.EventType, "-"), status, duration(l.DurationMs))
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
