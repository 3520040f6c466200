package gateway_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A target that echoes the request's headers back does not get the delivery's credentials into
// the attempt log: the Authorization value (basic-auth, bearer) and every header a plugin set
// (hmac signature, a headers plugin's API key) are [REDACTED] in the stored body, in every
// form the target may echo them; the subscription's own headers, shown by the API anyway,
// are kept.
func TestAttemptLogRedactsEchoedCredentials(t *testing.T) {
	e := engineEnv(t, nil)
	const (
		password = "reg-Pa55word-4d2"
		token    = "bearer-T0k3n-9f1e"
		apiKey   = "api-K3y-77ab01"
	)
	hmacSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a 32-byte secret for hmac tests!"))
	echo := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		headers, _ := json.Marshal(r.Header)
		w.Write(headers)
		if user, pass, ok := r.BasicAuth(); ok {
			w.Write([]byte("\nuser:pass " + user + ":" + pass + " password=" + pass))
		}
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			w.Write([]byte("\ntoken=" + bearer))
		}
	})
	reg := e.do("POST", "/api/WebhookRegistrations", `{"requestId": "r1", "callBackUrl": "`+echo.URL+`/reg",
		"callBackUserName": "reg-user", "callBackPassword": "`+password+`", "sourceSenderId": "m1"}`)
	expect(t, reg, http.StatusCreated)
	e.subscribe(t, echo.URL+"/hook", `, "headers": {"X-Team": "billing-team"}, "plugins": [
		{"name": "bearer", "config": {"token": "`+token+`"}},
		{"name": "headers", "config": {"X-Api-Key": "`+apiKey+`"}},
		{"name": "hmac", "config": {"secret": "`+hmacSecret+`"}}]`)
	e.post(t, `{"id": "echo-1", "type": "task.state.updated"}`)

	ds := e.eventDeliveries(t, "echo-1")
	if len(ds) != 2 {
		t.Fatalf("%d deliveries, want 2", len(ds))
	}
	bodies := map[string]string{}
	eventually(t, "both attempts logged", func() bool {
		for _, d := range ds {
			r := e.do("GET", "/v1/deliveries/"+d["id"].(string), nil)
			log, _ := r.json(t)["attemptLog"].([]any)
			if len(log) == 0 {
				return false
			}
			body, _ := log[0].(map[string]any)["responseBody"].(string)
			bodies[d["subscriptionId"].(string)] = body
		}
		return true
	})
	echo.mu.Lock()
	var sent []string // what the target received of the credentials
	for _, got := range echo.got {
		sent = append(sent, got.header.Get("Authorization"), got.header.Get("Webhook-Signature"))
	}
	echo.mu.Unlock()
	for sub, body := range bodies {
		for _, secret := range append(sent, password, "reg-user:"+password, token, apiKey) {
			if secret != "" && strings.Contains(body, secret) {
				t.Errorf("%s: the attempt log holds %q:\n%s", sub, secret, body)
			}
		}
		if !strings.Contains(body, "[REDACTED]") || !strings.Contains(body, "Webhook-Id") {
			t.Errorf("%s: stored body %s", sub, body)
		}
		if reg.json(t)["registrationId"] != sub && !strings.Contains(body, "billing-team") {
			t.Errorf("%s: the subscription's own header is redacted: %s", sub, body)
		}
	}
}

// A credential that straddles the 1 KiB the attempt log keeps is redacted too: no prefix of it
// is left at the end of the stored body.
func TestAttemptLogRedactsAtTheLimit(t *testing.T) {
	e := engineEnv(t, nil)
	const token = "bearer-T0k3n-at-the-limit"
	echo := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1015) + token + " and more"))
	})
	e.subscribe(t, echo.URL, `, "plugins": [{"name": "bearer", "config": {"token": "`+token+`"}}]`)
	e.post(t, `{"id": "edge-1", "type": "task.state.updated"}`)
	eventually(t, "attempt logged", func() bool { return e.deliveryOf(t, "edge-1")["attempts"].(float64) >= 1 })
	log := e.deliveryOf(t, "edge-1")["attemptLog"].([]any)
	body := log[0].(map[string]any)["responseBody"].(string)
	if len(body) != 1024 || strings.Contains(body, token[:9]) || !strings.HasSuffix(body, "[REDACTED]"[:9]) {
		t.Fatalf("stored body (%d bytes) ends %q", len(body), body[max(0, len(body)-20):])
	}
}
