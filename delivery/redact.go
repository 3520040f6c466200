package delivery

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// redactedText stands in the attempt log for a credential a target echoed back.
const redactedText = "[REDACTED]"

// alwaysCredentials are headers whose values are credentials whoever set them.
var alwaysCredentials = []string{"Authorization", "Proxy-Authorization", "Cookie"}

// Lengths below which a piece of a credential is not searched for: a short string would blank
// unrelated text of the body. A whole value, or the credentials of an Authorization value, of
// minCredential bytes or more is; a part of a value of several (one hmac signature of many) of
// minCredentialPart bytes or more is.
const (
	minCredential     = 4
	minCredentialPart = 16
)

// pluginHeaders returns the names of the headers whose values differ between before and after:
// those the plugins set.
func pluginHeaders(before, after http.Header) []string {
	var names []string
	for name, values := range after {
		if !slices.Equal(before[name], values) {
			names = append(names, name)
		}
	}
	return names
}

// credentials returns the text a target might echo of the attempt's credentials: the values of
// alwaysCredentials and of the named headers (the ones the plugins set). Besides each whole
// value: an Authorization value's credentials without the scheme, and for Basic the decoded
// user:password and the password; each space- or comma-separated part of a value of several;
// and each of these as it looks inside a JSON string (as Go, PHP or most encoders write it) or
// a URL query. Longest first.
func credentials(h http.Header, names []string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string, least int) {
		if len(s) < least || seen[s] {
			return
		}
		plain := jsonEscaped(s, false)
		for _, form := range []string{s, plain, jsonEscaped(s, true), strings.ReplaceAll(plain, "/", `\/`), url.QueryEscape(s)} {
			if !seen[form] {
				seen[form] = true
				out = append(out, form)
			}
		}
	}
	for _, name := range append(slices.Clone(alwaysCredentials), names...) {
		for _, v := range h.Values(name) {
			add(v, minCredential)
			scheme, creds, ok := strings.Cut(v, " ")
			if ok && !strings.ContainsAny(scheme, ",=") { // "Bearer t0k", "Basic dTpw"
				add(creds, minCredential)
				if strings.EqualFold(scheme, "Basic") {
					if raw, err := base64.StdEncoding.DecodeString(creds); err == nil {
						add(string(raw), minCredential)
						_, password, _ := strings.Cut(string(raw), ":")
						add(password, minCredential)
					}
				}
			}
			for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' }) {
				add(part, minCredentialPart)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// jsonEscaped is s as it appears between the quotes of a JSON string: with only what JSON
// requires escaped, or also <, > and & (html, as Go's encoding/json does by default).
func jsonEscaped(s string, html bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(html)
	enc.Encode(s) // a string always encodes
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// redact returns body with every occurrence of creds (longest first) replaced by redactedText.
func redact(body []byte, creds []string) []byte {
	if len(creds) == 0 || len(body) == 0 {
		return body
	}
	pairs := make([]string, 0, 2*len(creds))
	for _, c := range creds {
		pairs = append(pairs, c, redactedText)
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(body)))
}
