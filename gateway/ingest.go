package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/internal/groupcommit"
	"github.com/webhookgw/gateway/internal/traceparent"
	"github.com/webhookgw/gateway/store"
)

// maxBatch is the most events one POST /v1/events may carry.
const maxBatch = 1000

// maxEventID bounds a producer's event id.
const maxEventID = 256

// ingestRetryAfter is the Retry-After, in seconds, of a 503 for events the store did not commit.
const ingestRetryAfter = 5

// ingestReply is what POST /v1/events answers for one event.
type ingestReply struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Deliveries int    `json:"deliveries"`
	Duplicate  bool   `json:"duplicate,omitempty"`
}

// ingest is POST /v1/events: it answers 202 only once the events and their deliveries are
// committed, together with whatever other requests arrived meanwhile (group commit). Refused
// requests are counted by reason.
func (g *Gateway) ingest(c *fiber.Ctx) (err error) {
	defer func() {
		if err != nil {
			g.metrics.refusedIngest(err)
		}
	}()
	if g.ingestTokens != nil && !g.ingestTokens.allows(c.Get(fiber.HeaderAuthorization)) {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="webhook-gateway ingest"`)
		return newProblem(fiber.StatusUnauthorized, "a valid ingest token is required: Authorization: Bearer <token>")
	}
	// Only now, with the token checked, is the body read.
	body, err := readBody(c, g.cfg.Ingest.MaxBodyBytes, newProblem(fiber.StatusRequestEntityTooLarge,
		fmt.Sprintf("the request body is larger than ingest.max_body_bytes (%d bytes)", g.cfg.Ingest.MaxBodyBytes)))
	if err != nil {
		return err
	}
	events, batch, err := parseEvents(body, g.cfg.Events, g.now().UTC(), g.newID)
	if err != nil {
		return err
	}
	// The ingest span's context (a child of the producer's, when it sent a traceparent) is
	// kept with the events: their delivery attempts, however much later, join that trace.
	if tp := traceparent.From(c.UserContext()); tp != "" {
		for _, ev := range events {
			ev.TraceParent = tp
		}
	}
	var results []store.IngestResult
	if len(events) > 0 {
		results, err = g.ingestBatch.Do(c.UserContext(), events)
		if err != nil {
			if !errors.Is(err, groupcommit.ErrStopped) && c.UserContext().Err() == nil {
				g.storeWrote(err)
			}
			// Not committed, so not stored: the producer keeps the events and tries again.
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ingestRetryAfter))
			return newProblem(fiber.StatusServiceUnavailable,
				"the events could not be stored (the store did not commit them); nothing was stored: try again later")
		}
		g.storeWrote(nil)
	}
	replies := make([]ingestReply, len(results))
	for i, r := range results {
		replies[i] = ingestReply{ID: r.ID, Type: r.Type, Deliveries: r.Deliveries, Duplicate: r.Duplicate}
		g.metrics.ingestedEvent(r)
	}
	c.Status(fiber.StatusAccepted)
	if !batch {
		return c.JSON(replies[0])
	}
	return c.JSON(replies)
}

// parseEvents reads one event object or an array of them. Each event keeps the producer's
// bytes; an event without id or created gets them, added at the front of its object. Every
// event is checked before any is returned: malformed input is a 400 naming each event at
// fault, and an unknown type (the only problem otherwise) a 422 naming the accepted types.
func parseEvents(body []byte, types config.Events, now time.Time, newID func() string) ([]*store.Event, bool, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, false, newProblem(fiber.StatusBadRequest, "the request body is empty; send an event object or an array of them")
	}
	var raws []json.RawMessage
	batch := trimmed[0] == '['
	if batch {
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, true, newProblem(fiber.StatusBadRequest, "malformed JSON: "+trimJSONError(err))
		}
		if len(raws) > maxBatch {
			return nil, true, newProblem(fiber.StatusRequestEntityTooLarge,
				fmt.Sprintf("a batch holds at most %d events, not %d", maxBatch, len(raws)))
		}
	} else {
		if !json.Valid(trimmed) {
			var v any
			err := json.Unmarshal(trimmed, &v)
			return nil, false, newProblem(fiber.StatusBadRequest, "malformed JSON: "+trimJSONError(err))
		}
		raws = []json.RawMessage{trimmed}
	}

	events := make([]*store.Event, 0, len(raws))
	var bad, unknown []FieldError
	created := now.Format(rfc3339Offset)
	for i, raw := range raws {
		prefix := ""
		if batch {
			prefix = "[" + strconv.Itoa(i) + "]"
		}
		ev, fieldErrs, typeErr := parseEvent(raw, prefix, types, created, newID)
		bad = append(bad, fieldErrs...)
		if typeErr != nil {
			unknown = append(unknown, *typeErr)
		}
		if ev != nil {
			ev.ReceivedAt = now
			events = append(events, ev)
		}
	}
	switch {
	case len(bad) > 0:
		return nil, batch, newProblem(fiber.StatusBadRequest, "the events are not valid; nothing was stored", append(bad, unknown...)...)
	case len(unknown) > 0:
		return nil, batch, newProblem(fiber.StatusUnprocessableEntity, "unknown event type; accepted: "+strings.Join(types.Types, ", ")+"; nothing was stored", unknown...)
	}
	return events, batch, nil
}

// eventHead is what the gateway reads of an event; the rest is carried as it is.
type eventHead struct {
	ID, Type, Created json.RawMessage
}

// readHead reads the top-level id, type and created of an event object. Keys match exactly
// (encoding/json's struct decoding would take "Type" or "ID" for them, and a subscriber
// reading "type" would find none), and each may appear once.
func readHead(raw []byte) (eventHead, error) {
	var head eventHead
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // the opening brace: raw starts with '{'
		return head, fmt.Errorf("malformed JSON: %s", trimJSONError(err))
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return head, fmt.Errorf("malformed JSON: %s", trimJSONError(err))
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return head, fmt.Errorf("malformed JSON: %s", trimJSONError(err))
		}
		var field *json.RawMessage
		switch key {
		case "id":
			field = &head.ID
		case "type":
			field = &head.Type
		case "created":
			field = &head.Created
		default:
			continue
		}
		if *field != nil {
			return head, fmt.Errorf("%q appears twice", key)
		}
		*field = value
	}
	return head, nil
}

func parseEvent(raw json.RawMessage, prefix string, types config.Events, created string, newID func() string) (*store.Event, []FieldError, *FieldError) {
	field := func(name string) string {
		if prefix == "" {
			return name
		}
		return prefix + "." + name
	}
	if len(raw) == 0 || raw[0] != '{' {
		f := prefix
		if f == "" {
			f = "event"
		}
		return nil, []FieldError{{Field: f, Message: "must be a JSON object"}}, nil
	}
	head, err := readHead(raw)
	if err != nil {
		f := prefix
		if f == "" {
			f = "event"
		}
		return nil, []FieldError{{Field: f, Message: err.Error()}}, nil
	}
	var errs []FieldError
	var id, typ string
	switch {
	case head.ID == nil:
	case json.Unmarshal(head.ID, &id) != nil || id == "":
		errs = append(errs, FieldError{Field: field("id"), Message: "must be a non-empty string"})
	case !exactString(head.ID):
		// encoding/json turns each such byte or escape into U+FFFD: "u-\xff" and "u-\xfe" would
		// be one id, and the second event a duplicate never delivered.
		errs = append(errs, FieldError{Field: field("id"), Message: "must be valid UTF-8 (no invalid bytes or unpaired surrogates)"})
	case len(id) > maxEventID:
		errs = append(errs, FieldError{Field: field("id"), Message: fmt.Sprintf("must be at most %d bytes", maxEventID)})
	}
	if head.Type == nil {
		errs = append(errs, FieldError{Field: field("type"), Message: "is required"})
	} else if json.Unmarshal(head.Type, &typ) != nil || typ == "" {
		errs = append(errs, FieldError{Field: field("type"), Message: "must be a non-empty string"})
	}
	if head.Created != nil && string(head.Created) == "null" {
		errs = append(errs, FieldError{Field: field("created"), Message: "must not be null; leave it out to have it set"})
	}
	if len(errs) > 0 {
		return nil, errs, nil
	}
	if err := types.Check(typ); err != nil {
		return nil, nil, &FieldError{Field: field("type"), Message: fmt.Sprintf("unknown event type %q", typ)}
	}

	// The payload is the producer's bytes, copied (Fiber reuses its buffer), with what is
	// missing added at the front: {"id":"…","created":"…", …}.
	var add []byte
	if head.ID == nil {
		id = newID()
		add = append(add, `"id":`...)
		add = strconv.AppendQuote(add, id)
		add = append(add, ',')
	}
	if head.Created == nil {
		add = append(add, `"created":`...)
		add = strconv.AppendQuote(add, created)
		add = append(add, ',')
	}
	payload := make([]byte, 0, len(raw)+len(add))
	if len(add) == 0 {
		payload = append(payload, raw...)
	} else {
		payload = append(payload, '{')
		payload = append(payload, add...)
		payload = append(payload, raw[1:]...)
	}
	return &store.Event{ID: id, Type: typ, Payload: payload}, nil, nil
}

// exactString reports whether the JSON string literal raw decodes to exactly what it says: its
// bytes are valid UTF-8 and every \u escape of a surrogate is one of a pair. encoding/json
// replaces what is not with U+FFFD, so different ids would decode to the same one.
func exactString(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r := hex4(raw[i+1:])
		i += 4
		switch {
		case r < 0xd800 || r > 0xdfff:
		case r >= 0xdc00: // a low surrogate without its high one
			return false
		case i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u':
			if lo := hex4(raw[i+3:]); lo < 0xdc00 || lo > 0xdfff {
				return false
			}
			i += 6
		default: // a high surrogate without its low one
			return false
		}
	}
	return true
}

// hex4 is the value of the four hex digits b starts with (the JSON has been checked), or -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return -1
		}
	}
	return r
}

// trimJSONError drops encoding/json's "json: " prefix.
func trimJSONError(err error) string {
	if err == nil {
		return "invalid"
	}
	msg := err.Error()
	if len(msg) > 6 && msg[:6] == "json: " {
		return msg[6:]
	}
	return msg
}
