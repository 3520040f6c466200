package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
)

const eventsHelp = `usage: gateway events send [FILE]

  send [FILE]   post an event, or a JSON array of up to 1000, from FILE or stdin

gateway events send --help tells more.
`

const eventsSendHelp = `usage: gateway events send [FILE]

Posts an event, or a JSON array of events, to the ingest API (POST /v1/events): FILE, or stdin
when FILE is - or left out. The gateway answers once the events and their deliveries are
stored: each event's id, type, number of deliveries, and whether it was a duplicate id.

The ingest API is --ingest-url (default $` + EnvIngestURL + `, else the gateway's URL: set it when
admin.listen serves the management API apart), with --ingest-token (default
$` + EnvIngestToken + `) when ingest.tokens is set.
`

func (p *Program) eventsSend(ctx context.Context, args []string) int {
	s := p.newSession("events send", eventsSendHelp, "url")
	ingestURL := s.fs.String("ingest-url", "", "the ingest API's `URL` (default $"+EnvIngestURL+", else the gateway's)")
	ingestToken := s.fs.String("ingest-token", "", "the ingest `TOKEN` (default $"+EnvIngestToken+")")
	if code, done := s.parse(args, 0, 1); done {
		return code
	}
	name := "-"
	if len(s.args) == 1 {
		name = s.args[0]
	}
	body, err := readInput(name, s.p.Stdin)
	if err != nil {
		return s.usageError("%v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return s.usageError("no event: the input is empty")
	}
	req := request{method: http.MethodPost, path: "/v1/events", body: body, token: *ingestToken,
		tokenHint: "--ingest-token or $" + EnvIngestToken}
	if req.token == "" {
		req.token = s.p.Getenv(EnvIngestToken)
	}
	if *ingestURL == "" {
		*ingestURL = s.p.Getenv(EnvIngestURL)
	}
	if *ingestURL != "" {
		if req.base, err = parseBaseURL(*ingestURL); err != nil {
			return s.usageError("--ingest-url: %v", err)
		}
	}
	a, code, _ := s.do(ctx, req)
	if code != ExitOK {
		return code
	}
	if !s.terminal() {
		s.printJSON(a.body)
		return ExitOK
	}
	type accepted struct {
		ID         string `json:"id"`
		Type       string `json:"type"`
		Deliveries int    `json:"deliveries"`
		Duplicate  bool   `json:"duplicate"`
	}
	var list []accepted
	if trimmed := bytes.TrimSpace(a.body); len(trimmed) > 0 && trimmed[0] == '[' {
		if code := s.decode(a.body, &list); code != ExitOK {
			return code
		}
	} else {
		var one accepted
		if code := s.decode(a.body, &one); code != ExitOK {
			return code
		}
		list = append(list, one)
	}
	t := s.newTable()
	t.row("ID", "TYPE", "DELIVERIES", "DUPLICATE")
	for _, e := range list {
		dup := "no"
		if e.Duplicate {
			dup = "yes"
		}
		t.row(e.ID, e.Type, strconv.Itoa(e.Deliveries), dup)
	}
	t.flush()
	return ExitOK
}

// eventType reads an event body's type, "" when it has none.
func eventType(body []byte) string {
	var e struct {
		Type string `json:"type"`
	}
	json.Unmarshal(body, &e)
	return e.Type
}
