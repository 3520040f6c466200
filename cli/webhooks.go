package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
)

const webhooksHelp = `usage: gateway webhooks list|get|create|delete [flags]

  list                 every subscription, oldest first (--all for more than a page)
  get ID               one subscription
  create --url URL     register a webhook (--event T, --header K=V), or --file FILE
  delete ID            delete a subscription for good

gateway webhooks <command> --help tells more.
`

const (
	webhooksListHelp = `usage: gateway webhooks list [--limit N] [--after ID] [--all]

Lists the subscriptions (GET /v1/webhooks), oldest first: webhooks and dialect-2 registrations.
`
	webhooksGetHelp = `usage: gateway webhooks get ID

Shows one subscription (GET /v1/webhooks/ID).
`
	webhooksCreateHelp = `usage: gateway webhooks create --url URL [--event TYPE]... [--header NAME=VALUE]...
       gateway webhooks create --file FILE   (- for stdin)

Registers a webhook (POST /v1/webhooks). With flags: the target URL, the event types it receives
(repeat --event; none: events.default) and custom headers (repeat --header). With --file: the
request body as JSON, for plugins and deliveryPolicy too, such as
  {"url": "https://example.com/hooks", "events": ["task.state.updated"],
   "plugins": [{"name": "hmac", "config": {"secret": "whsec_..."}}]}
Here --url is the webhook's URL: the gateway's address is --gateway (or $GATEWAY_URL).
`
	webhooksDeleteHelp = `usage: gateway webhooks delete ID

Deletes a subscription for good (DELETE /v1/webhooks/ID); its waiting deliveries fail. Prints
nothing with --json (the API answers 204 with no body).
`
)

// webhook is what the tables show of the API's webhook view.
type webhook struct {
	ID      string            `json:"id"`
	URL     string            `json:"url"`
	Events  []string          `json:"events"`
	Headers map[string]string `json:"headers"`
	Plugins []struct {
		Name string `json:"name"`
	} `json:"plugins"`
	DeliveryPolicy struct {
		MaxInFlight *int     `json:"maxInFlight"`
		RateLimit   *float64 `json:"rateLimit"`
		Ordering    *string  `json:"ordering"`
	} `json:"deliveryPolicy"`
	Source           string  `json:"source"`
	IsActive         bool    `json:"isActive"`
	DeactivatedAt    *string `json:"deactivatedAt"`
	IsInErrorState   bool    `json:"isInErrorState"`
	ErrorStateReason *string `json:"errorStateReason"`
	CreatedAt        string  `json:"createdAt"`
	UpdatedAt        string  `json:"updatedAt"`
}

// state is a subscription's state in a word or two: active, error (reason), inactive.
func (w webhook) state() string {
	switch {
	case !w.IsActive:
		return "inactive"
	case w.IsInErrorState:
		return "error (" + deref(w.ErrorStateReason) + ")"
	}
	return "active"
}

func (w webhook) policy() string {
	var parts []string
	if w.DeliveryPolicy.MaxInFlight != nil {
		parts = append(parts, fmt.Sprintf("maxInFlight %d", *w.DeliveryPolicy.MaxInFlight))
	}
	if w.DeliveryPolicy.RateLimit != nil {
		parts = append(parts, "rateLimit "+strconv.FormatFloat(*w.DeliveryPolicy.RateLimit, 'f', -1, 64)+"/s")
	}
	if w.DeliveryPolicy.Ordering != nil {
		parts = append(parts, "ordering "+*w.DeliveryPolicy.Ordering)
	}
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, ", ")
}

func (p *Program) webhooksList(ctx context.Context, args []string) int {
	s := p.newSession("webhooks list", webhooksListHelp, "url")
	limit := s.fs.Int("limit", 0, "subscriptions per page, 1 to 1000 (default: the gateway's, 100)")
	after := s.fs.String("after", "", "start after the subscription with this `ID`")
	all := s.fs.Bool("all", false, "follow the Link header through every page")
	if code, done := s.parse(args, 0, 0); done {
		return code
	}
	q := url.Values{}
	if *limit != 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	if *after != "" {
		q.Set("after", *after)
	}
	items, next, code := s.pages(ctx, request{method: http.MethodGet, path: "/v1/webhooks", query: q, token: s.token}, *all)
	if code != ExitOK {
		return code
	}
	if !s.terminal() {
		s.printJSONArray(items)
		s.morePages(next, items)
		return ExitOK
	}
	t := s.newTable()
	t.row("ID", "URL", "EVENTS", "SOURCE", "STATE")
	for _, it := range items {
		var w webhook
		if code := s.decode(it, &w); code != ExitOK {
			return code
		}
		t.row(w.ID, w.URL, strings.Join(w.Events, ","), w.Source, w.state())
	}
	t.flush()
	s.morePages(next, items)
	return ExitOK
}

// morePages says on stderr that a list has more pages than it printed.
func (s *session) morePages(next string, items []json.RawMessage) {
	if next == "" || len(items) == 0 {
		return
	}
	var last struct{ ID string }
	json.Unmarshal(items[len(items)-1], &last)
	fmt.Fprintf(s.p.Stderr, "More on the next page: --all for every page, or --after %s for the next.\n", last.ID)
}

func (p *Program) webhooksGet(ctx context.Context, args []string) int {
	s := p.newSession("webhooks get", webhooksGetHelp, "url")
	if code, done := s.parse(args, 1, 1); done {
		return code
	}
	a, code, _ := s.do(ctx, request{method: http.MethodGet, path: "/v1/webhooks/" + url.PathEscape(s.args[0]), token: s.token})
	if code != ExitOK {
		return code
	}
	return s.printWebhook(a.body)
}

func (s *session) printWebhook(body []byte) int {
	if !s.terminal() {
		s.printJSON(body)
		return ExitOK
	}
	var w webhook
	if code := s.decode(body, &w); code != ExitOK {
		return code
	}
	var headers, plugins []string
	for k, v := range w.Headers {
		headers = append(headers, k+": "+v)
	}
	sort.Strings(headers)
	for _, pl := range w.Plugins {
		plugins = append(plugins, pl.Name)
	}
	t := s.newTable()
	t.row("ID", w.ID)
	t.row("URL", w.URL)
	t.row("Events", strings.Join(w.Events, ", "))
	t.row("Headers", strings.Join(headers, ", "))
	t.row("Plugins", strings.Join(plugins, ", "))
	t.row("Policy", w.policy())
	t.row("Source", w.Source)
	t.row("State", w.state())
	t.row("Created", w.CreatedAt)
	t.row("Updated", w.UpdatedAt)
	t.flush()
	return ExitOK
}

func (p *Program) webhooksCreate(ctx context.Context, args []string) int {
	s := p.newSession("webhooks create", webhooksCreateHelp, "gateway")
	target := s.fs.String("url", "", "the webhook's target `URL`")
	var events, headers stringList
	s.fs.Var(&events, "event", "an event `TYPE` it receives (repeat for more; none: events.default)")
	s.fs.Var(&headers, "header", "a custom header, `NAME=VALUE`, sent with every delivery (repeat for more)")
	file := s.fs.String("file", "", "the request body, JSON, from `FILE` (- for stdin) instead of the flags")
	if code, done := s.parse(args, 0, 0); done {
		return code
	}
	var body []byte
	switch {
	case *file != "" && (*target != "" || len(events) > 0 || len(headers) > 0):
		return s.usageError("--file is the whole request: it takes no --url, --event or --header")
	case *file != "":
		b, err := readInput(*file, s.p.Stdin)
		if err != nil {
			return s.usageError("%v", err)
		}
		body = b
	case *target == "":
		return s.usageError("--url or --file is required")
	default:
		req := struct {
			URL     string            `json:"url"`
			Events  []string          `json:"events,omitempty"`
			Headers map[string]string `json:"headers,omitempty"`
		}{URL: *target, Events: events}
		for _, h := range headers {
			k, v, ok := strings.Cut(h, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return s.usageError("--header %q: want NAME=VALUE", h)
			}
			if req.Headers == nil {
				req.Headers = map[string]string{}
			}
			req.Headers[strings.TrimSpace(k)] = v
		}
		body, _ = json.Marshal(req)
	}
	a, code, _ := s.do(ctx, request{method: http.MethodPost, path: "/v1/webhooks", body: body, token: s.token})
	if code != ExitOK {
		return code
	}
	return s.printWebhook(a.body)
}

func (p *Program) webhooksDelete(ctx context.Context, args []string) int {
	s := p.newSession("webhooks delete", webhooksDeleteHelp, "url")
	if code, done := s.parse(args, 1, 1); done {
		return code
	}
	a, code, _ := s.do(ctx, request{method: http.MethodDelete, path: "/v1/webhooks/" + url.PathEscape(s.args[0]), token: s.token})
	if code != ExitOK {
		return code
	}
	if !s.terminal() {
		if len(a.body) > 0 {
			s.printJSON(a.body)
		}
		return ExitOK
	}
	fmt.Fprintf(s.p.Stdout, "Deleted %s.\n", s.args[0])
	return ExitOK
}

// readInput reads a file, or stdin for "-".
func readInput(name string, stdin io.Reader) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(name)
}
