package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/webhookgw/gateway/config"
)

// FuzzParseEvents feeds arbitrary bodies to the event decoder. It must never panic; a refusal
// must be a 4xx problem; and every accepted event's payload must be a JSON object whose id and
// type are the ones stored, equal to the producer's bytes when nothing had to be added. An
// accepted id is exactly what the producer wrote: valid UTF-8, and with a U+FFFD in it only
// when the producer wrote one (encoding/json makes one of every invalid byte and unpaired
// surrogate, which would merge different ids).
func FuzzParseEvents(f *testing.F) {
	for _, s := range []string{
		`{"id": "b041a287", "type": "transaction.state.updated", "created": "2022-01-01T00:00:00+00:00", "transaction": {"id": "b6", "state": "completed"}}`,
		`{"type": "task.state.updated"}`,
		`[{"type": "task.state.updated"}, {"id": "x", "type": "transaction.state.updated", "created": 1}]`,
		`[]`, `{}`, `[1]`, `"x"`, `{"type": "nope"}`, `{"id": 5, "type": "task.state.updated"}`,
		`{"id": "\u00e9", "type": "task.state.updated", "id": "dup"}`, `{"type":"task.state.updated","created":null}`,
		` {"type" : "task.state.updated" } `, `[{"type":"task.state.updated"}]x`,
		"{\"id\": \"u-\xff\", \"type\": \"task.state.updated\"}", "[{\"id\": \"u-\xfe\", \"type\": \"task.state.updated\"}]",
		`{"id": "u-\ud800", "type": "task.state.updated"}`, `{"id": "u-\udc00\ud800", "type": "task.state.updated"}`,
		`{"id": "u-\ud83d\ude00", "type": "task.state.updated"}`, `{"id": "u-\ufffd\\ud800", "type": "task.state.updated"}`,
	} {
		f.Add([]byte(s))
	}
	types := config.Default().Events
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		n := 0
		events, _, err := parseEvents(body, types, now, func() string { n++; return "generated-" + string(rune('a'+n%26)) })
		if err != nil {
			var p *problemError
			if !errors.As(err, &p) || p.Status < 400 || p.Status > 499 {
				t.Fatalf("refusal is not a 4xx problem: %v", err)
			}
			return
		}
		for _, ev := range events {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(ev.Payload, &obj); err != nil {
				t.Fatalf("payload is not a JSON object: %v\n%s", err, ev.Payload)
			}
			var id, typ string
			json.Unmarshal(obj["id"], &id)
			json.Unmarshal(obj["type"], &typ)
			if id != ev.ID || typ != ev.Type || obj["created"] == nil {
				t.Fatalf("payload %s does not carry id %q, type %q and created", ev.Payload, ev.ID, ev.Type)
			}
			if !utf8.ValidString(ev.ID) {
				t.Fatalf("accepted id %q is not valid UTF-8", ev.ID)
			}
			if raw := obj["id"]; strings.ContainsRune(ev.ID, utf8.RuneError) && !bytes.Contains(raw, []byte("\uFFFD")) &&
				!bytes.Contains(bytes.ToLower(raw), []byte(`\ufffd`)) {
				t.Fatalf("accepted id %s is stored as %q: a U+FFFD the producer did not write", raw, ev.ID)
			}
			if types.Check(ev.Type) != nil {
				t.Fatalf("accepted unknown type %q", ev.Type)
			}
			if !bytes.HasPrefix(ev.Payload, []byte(`{"id":`)) && !bytes.HasPrefix(ev.Payload, []byte(`{"created":`)) &&
				!bytes.Contains(body, ev.Payload) {
				t.Fatalf("untouched payload is not the producer's bytes: %s", ev.Payload)
			}
		}
	})
}
