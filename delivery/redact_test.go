package delivery

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

func TestCredentials(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("jroll:pa/ss<word>")))
	h.Set("Webhook-Signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,AAAAzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=")
	h.Set("X-Api-Key", "k3y")
	h.Set("X-Team", "billing") // the subscription's own header: shown by the API, not a credential
	got := credentials(h, []string{"Webhook-Signature", "X-Api-Key"})
	has := map[string]bool{}
	for _, c := range got {
		has[c] = true
	}
	for _, want := range []string{
		h.Get("Authorization"),
		strings.TrimPrefix(h.Get("Authorization"), "Basic "),
		"jroll:pa/ss<word>", "pa/ss<word>", // decoded
		`pa\/ss<word>`, `pa/ss\u003cword\u003e`, "pa%2Fss%3Cword%3E", // escaped as a JSON string or a query
		h.Get("Webhook-Signature"),
		"K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", // one signature of two
	} {
		if !has[want] {
			t.Errorf("%q is not redacted", want)
		}
	}
	for _, not := range []string{"billing", "k3y", "v1", "Basic", "jroll"} {
		if has[not] {
			t.Errorf("%q is redacted", not)
		}
	}
	for i := 1; i < len(got); i++ {
		if len(got[i]) > len(got[i-1]) {
			t.Fatalf("not longest first: %q", got)
		}
	}
}

func TestRedact(t *testing.T) {
	creds := []string{"Bearer t0ken-abc", "t0ken-abc"}
	body := []byte(`{"authorization":"Bearer t0ken-abc","token":"t0ken-abc","n":1}`)
	want := `{"authorization":"[REDACTED]","token":"[REDACTED]","n":1}`
	if got := string(redact(body, creds)); got != want {
		t.Fatalf("redact = %s, want %s", got, want)
	}
	if got := redact([]byte("\xff\x00binary"), creds); string(got) != "\xff\x00binary" {
		t.Fatalf("a body without credentials changed: %q", got)
	}
}
