package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

const deliveriesHelp = `usage: gateway deliveries list|get|retry [flags]

  list [--status S] [--subscription ID] [--event-type T] [--since D] [--until D] [--all]
               deliveries across subscriptions, newest first
  get ID       one delivery with every attempt
  retry ID     schedule a delivery again, now

gateway deliveries <command> --help tells more.
`

const (
	deliveriesListHelp = `usage: gateway deliveries list [--status S] [--subscription ID] [--event-type T]
                               [--since D] [--until D] [--limit N] [--after ID] [--all]

Lists deliveries across subscriptions, newest first (GET /v1/deliveries). The filters combine.
--since and --until take an RFC 3339 time (2026-12-01T05:00:00Z) or a duration before now (90m,
2h, 7d); the window is since <= created < until. One page unless --all, which follows the Link
header through every page (in JSON, one array of them all).
`
	deliveriesGetHelp = `usage: gateway deliveries get ID

Shows one delivery and every attempt: time, duration, status code or error, trace id
(GET /v1/deliveries/ID). With --json, the attempts' response bodies too.
`
	deliveriesRetryHelp = `usage: gateway deliveries retry ID

Schedules a delivery again, now, whatever its status (POST /v1/deliveries/ID/retry); one that
had failed for good gets one more round of attempts.
`
)

// delivery is what the tables show of the API's delivery view.
type delivery struct {
	ID             string    `json:"id"`
	EventID        string    `json:"eventId"`
	EventType      string    `json:"eventType"`
	SubscriptionID string    `json:"subscriptionId"`
	Status         string    `json:"status"`
	Attempts       int       `json:"attempts"`
	NextAttemptAt  *string   `json:"nextAttemptAt"`
	LastStatusCode *int      `json:"lastStatusCode"`
	LastError      *string   `json:"lastError"`
	CreatedAt      string    `json:"createdAt"`
	UpdatedAt      string    `json:"updatedAt"`
	FinishedAt     *string   `json:"finishedAt"`
	AttemptLog     []attempt `json:"attemptLog"`
}

// attempt is one HTTP attempt, in a delivery's attempt log or as a test's answer.
type attempt struct {
	At           string  `json:"at"`
	DurationMs   float64 `json:"durationMs"`
	StatusCode   *int    `json:"statusCode"`
	Error        *string `json:"error"`
	ResponseBody *string `json:"responseBody"`
	TraceID      *string `json:"traceId"`
}

// result is an attempt's outcome: its status code, or its error.
func result(code *int, err *string) string {
	switch {
	case code != nil:
		return strconv.Itoa(*code)
	case err != nil:
		return *err
	}
	return ""
}

func duration(ms float64) string {
	return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
}

func (p *Program) deliveriesList(ctx context.Context, args []string) int {
	s := p.newSession("deliveries list", deliveriesListHelp, "url")
	q := url.Values{}
	filter := func(name, param, usage string) {
		s.fs.Func(name, usage, func(v string) error {
			q.Set(param, v)
			return nil
		})
	}
	filter("status", "status", "only deliveries in this state: pending, succeeded or failed")
	filter("subscription", "subscription", "only deliveries to this subscription `ID`")
	filter("event-type", "event_type", "only deliveries of events of this `TYPE`")
	filter("since", "since", "only deliveries created at or after this `TIME` (RFC 3339, or a duration before now: 2h)")
	filter("until", "until", "only deliveries created before this `TIME` (RFC 3339, or a duration before now)")
	filter("after", "after", "start after the delivery with this `ID` (the next page)")
	limit := s.fs.Int("limit", 0, "deliveries per page, 1 to 1000 (default: the gateway's, 100)")
	all := s.fs.Bool("all", false, "follow the Link header through every page")
	if code, done := s.parse(args, 0, 0); done {
		return code
	}
	if *limit != 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	items, next, code := s.pages(ctx, request{method: http.MethodGet, path: "/v1/deliveries", query: q, token: s.token}, *all)
	if code != ExitOK {
		return code
	}
	if !s.terminal() {
		s.printJSONArray(items)
		s.morePages(next, items)
		return ExitOK
	}
	t := s.newTable()
	t.row("ID", "EVENT", "TYPE", "SUBSCRIPTION", "STATUS", "ATTEMPTS", "LAST", "CREATED")
	for _, it := range items {
		var d delivery
		if code := s.decode(it, &d); code != ExitOK {
			return code
		}
		t.row(d.ID, d.EventID, d.EventType, d.SubscriptionID, d.Status, strconv.Itoa(d.Attempts), result(d.LastStatusCode, d.LastError), d.CreatedAt)
	}
	t.flush()
	s.morePages(next, items)
	return ExitOK
}

func (p *Program) deliveriesGet(ctx context.Context, args []string) int {
	s := p.newSession("deliveries get", deliveriesGetHelp, "url")
	if code, done := s.parse(args, 1, 1); done {
		return code
	}
	a, code, _ := s.do(ctx, request{method: http.MethodGet, path: "/v1/deliveries/" + url.PathEscape(s.args[0]), token: s.token})
	if code != ExitOK {
		return code
	}
	return s.printDelivery(a.body)
}

func (p *Program) deliveriesRetry(ctx context.Context, args []string) int {
	s := p.newSession("deliveries retry", deliveriesRetryHelp, "url")
	if code, done := s.parse(args, 1, 1); done {
		return code
	}
	a, code, _ := s.do(ctx, request{method: http.MethodPost, path: "/v1/deliveries/" + url.PathEscape(s.args[0]) + "/retry", token: s.token})
	if code != ExitOK {
		return code
	}
	return s.printDelivery(a.body)
}

// printDelivery prints one delivery, and its attempt log when the answer has one.
func (s *session) printDelivery(body []byte) int {
	if !s.terminal() {
		s.printJSON(body)
		return ExitOK
	}
	var d delivery
	if code := s.decode(body, &d); code != ExitOK {
		return code
	}
	t := s.newTable()
	t.row("ID", d.ID)
	t.row("Event", d.EventID+" ("+d.EventType+")")
	t.row("Subscription", d.SubscriptionID)
	t.row("Status", d.Status)
	t.row("Attempts", strconv.Itoa(d.Attempts))
	t.row("Last", result(d.LastStatusCode, d.LastError))
	t.row("Next attempt", deref(d.NextAttemptAt))
	t.row("Created", d.CreatedAt)
	t.row("Finished", deref(d.FinishedAt))
	t.flush()
	if len(d.AttemptLog) == 0 {
		return ExitOK
	}
	fmt.Fprintln(s.p.Stdout)
	t = s.newTable()
	t.row("#", "AT", "DURATION", "RESULT", "RESPONSE", "TRACE")
	for i, a := range d.AttemptLog {
		t.row(strconv.Itoa(i+1), a.At, duration(a.DurationMs), result(a.StatusCode, a.Error), oneLine(deref(a.ResponseBody), 40), deref(a.TraceID))
	}
	t.flush()
	return ExitOK
}

// oneLine is the start of s on one line, at most n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
