package hmac_test

import (
	"bytes"
	"context"
	stdhmac "crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/plugins/hmac"
)

var update = flag.Bool("update", false, "rewrite testdata/config_errors.golden")

// Secrets for the tests: the Standard Webhooks example (24 bytes), and two of 32 bytes.
const (
	exampleSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretA       = "whsec_+nxxU0RX+L47T9DFLCguwO+GD8dB5Nmdyb25WKmhN4M="
	secretB       = "whsec_K6OWsKqz4XJUPnu9au0hXXfIhOSyt2v2XNwb/qEWnGU="
	secretC       = "whsec_uNVpiObxgckxcFBWE5fW9zze8zEDAFqe"
)

func node(t testing.TB, text string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(text), &n); err != nil {
		t.Fatal(err)
	}
	return &n
}

// newPlugin makes the plugin the way the gateway does: by name, from YAML, through the
// built-in registry.
func newPlugin(t testing.TB, configYAML string) plugins.Plugin {
	t.Helper()
	p, err := builtin.Registry().New(hmac.Name, node(t, configYAML))
	if err != nil {
		t.Fatalf("config %s: %v", configYAML, err)
	}
	return p
}

// prepare sets what the gateway sets before the plugins run, then applies p.
func prepare(t testing.TB, p plugins.Plugin, req *http.Request, id string, ts int64, body []byte) {
	t.Helper()
	req.Header.Set("Webhook-Id", id)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Content-Type", "application/json")
	if err := p.Apply(context.Background(), req, body); err != nil {
		t.Fatal(err)
	}
}

func newRequest(t testing.TB, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// verifyStd checks a request as a receiver in any language would, with nothing but HMAC-SHA256
// and base64 (the README's Python snippet does the same): rebuild "{id}.{timestamp}.{body}",
// sign it with the key, compare in constant time with each "v1," signature, and refuse a
// timestamp more than tolerance away from now.
func verifyStd(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts, sigs := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), h.Get("Webhook-Signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing Webhook-Id, Webhook-Timestamp or Webhook-Signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("timestamp %s is %v from now", ts, d)
	}
	mac := stdhmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Split(sigs, " ") {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		if got, err := base64.StdEncoding.DecodeString(sig); err == nil && stdhmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

func library(t testing.TB, secret string) *standardwebhooks.Webhook {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh
}

// TestVerifiedByStandardWebhooksLibrary checks our signatures with the official Go library,
// on the first attempt and on a retry, which must be signed again with its new timestamp.
func TestVerifiedByStandardWebhooksLibrary(t *testing.T) {
	bodies := map[string][]byte{
		"object":  []byte(`{"type":"invoice.paid","data":{"id":"inv_1","amount":1200}}`),
		"empty":   {},
		"unicode": []byte(`{"note":"café ✓ 日本語","emoji":"🚀"}`),
		"binary":  {0, 0xff, '.', '\n', 0x80, '"'},
		"large":   bytes.Repeat([]byte(`{"k":"v"},`), 100_000),
	}
	p := newPlugin(t, "{secret: "+exampleSecret+"}")
	wh := library(t, exampleSecret)
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			now := time.Now().Unix()
			req := newRequest(t, "https://receiver.example/hook", body)
			prepare(t, p, req, "msg_"+name, now, body)
			if err := wh.Verify(body, req.Header); err != nil {
				t.Fatalf("first attempt: %v (Webhook-Signature %q)", err, req.Header.Get("Webhook-Signature"))
			}
			first := req.Header.Get("Webhook-Signature")

			// The retry: the gateway sets a new timestamp and applies the plugins again.
			prepare(t, p, req, "msg_"+name, now+7, body)
			sigs := req.Header.Values("Webhook-Signature")
			if len(sigs) != 1 || sigs[0] == first || strings.Count(sigs[0], "v1,") != 1 {
				t.Fatalf("retry: Webhook-Signature %q, want one new signature (first was %q)", sigs, first)
			}
			if err := wh.Verify(body, req.Header); err != nil {
				t.Fatalf("retry: %v", err)
			}
			// The first signature does not hold for the retry's timestamp: re-signing matters.
			stale := req.Header.Clone()
			stale.Set("Webhook-Signature", first)
			if err := wh.Verify(body, stale); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
				t.Fatalf("first signature with the retry's timestamp: %v, want no match", err)
			}
		})
	}
}

// TestRotation signs with a new secret and the previous one: a receiver that knows either
// verifies, one that knows neither does not.
func TestRotation(t *testing.T) {
	p := newPlugin(t, fmt.Sprintf("{secret: %q, previous_secrets: [%q, %q]}", secretA, secretB, secretC))
	body := []byte(`{"type":"user.created"}`)
	req := newRequest(t, "https://receiver.example/hook", body)
	prepare(t, p, req, "msg_rotation", time.Now().Unix(), body)

	sig := req.Header.Get("Webhook-Signature")
	parts := strings.Split(sig, " ")
	if len(parts) != 3 {
		t.Fatalf("Webhook-Signature %q, want three space-separated signatures", sig)
	}
	for i, secret := range []string{secretA, secretB, secretC} {
		if err := library(t, secret).Verify(body, req.Header); err != nil {
			t.Errorf("verifier with only secret %d: %v", i, err)
		}
		// Order: the current secret first, then the previous ones as listed.
		only := req.Header.Clone()
		only.Set("Webhook-Signature", parts[i])
		if err := library(t, secret).Verify(body, only); err != nil {
			t.Errorf("signature %d is not secret %d's: %v", i, i, err)
		}
	}
	if err := library(t, exampleSecret).Verify(body, req.Header); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("verifier with another secret: %v, want no match", err)
	}
}

type vector struct {
	Name            string   `json:"name"`
	Secret          string   `json:"secret"`
	PreviousSecrets []string `json:"previous_secrets"`
	ID              string   `json:"id"`
	Timestamp       string   `json:"timestamp"`
	Body            string   `json:"body"`
	Signature       string   `json:"signature"`
}

// TestVectors checks fixed signatures: the Standard Webhooks specification's example, and
// vectors computed with the official library (rotation, a 64-byte key, an empty body). The
// library must agree with every one, so the file is checked against it too.
func TestVectors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vectors []vector
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 || vectors[0].Signature != "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" {
		t.Fatal("testdata/vectors.json does not start with the Standard Webhooks example")
	}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			previous := make([]hmac.Secret, len(v.PreviousSecrets))
			for i, s := range v.PreviousSecrets {
				previous[i] = hmac.Secret(s)
			}
			p, err := hmac.New(hmac.Config{Secret: hmac.Secret(v.Secret), PreviousSecrets: previous})
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, "https://receiver.example/hook", nil)
			req.Header.Set("Webhook-Id", v.ID)
			req.Header.Set("Webhook-Timestamp", v.Timestamp)
			if err := p.Apply(context.Background(), req, []byte(v.Body)); err != nil {
				t.Fatal(err)
			}
			if got := req.Header.Get("Webhook-Signature"); got != v.Signature {
				t.Errorf("Webhook-Signature\n got %s\nwant %s", got, v.Signature)
			}

			sec, err := strconv.ParseInt(v.Timestamp, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, s := range append([]string{v.Secret}, v.PreviousSecrets...) {
				sig, err := library(t, s).Sign(v.ID, time.Unix(sec, 0), []byte(v.Body))
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, sig)
			}
			if lib := strings.Join(want, " "); lib != v.Signature {
				t.Errorf("the library signs %s, the vector says %s", lib, v.Signature)
			}
		})
	}
}

// TestConfigProblems checks that configurations are decoded strictly and validated, each
// problem at its path, and that no message repeats a secret. testdata/config_errors.golden
// holds every message (go test -run TestConfigProblems -update rewrites it).
func TestConfigProblems(t *testing.T) {
	short := "whsec_" + base64.StdEncoding.EncodeToString([]byte("only-sixteen-byt"))
	long := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("k"), 65))
	bare := strings.TrimPrefix(secretA, "whsec_")
	badB64 := "whsec_MfKQ9r8GKYqrTwjU*D8ILPZIo2LaLaSw"
	unpadded := strings.TrimRight(secretA, "=")
	cases := []struct {
		name, config string
		paths        []string // every problem's path, in order
	}{
		{"unknown key", fmt.Sprintf("{secret: %q, previous_secret: [%q]}", secretA, secretB), []string{"previous_secret"}},
		{"missing secret", "{}", []string{"secret"}},
		{"no config", "", []string{"secret"}},
		{"null secret", "{secret: null}", []string{"secret"}},
		{"only previous secrets", fmt.Sprintf("{previous_secrets: [%q]}", secretB), []string{"secret"}},
		{"no whsec_ prefix", fmt.Sprintf("{secret: %q}", bare), []string{"secret"}},
		{"upper-case prefix", fmt.Sprintf("{secret: %q}", "WHSEC_"+bare), []string{"secret"}},
		{"bad base64", fmt.Sprintf("{secret: %q}", badB64), []string{"secret"}},
		{"base64 without padding", fmt.Sprintf("{secret: %q}", unpadded), []string{"secret"}},
		{"URL-safe base64", fmt.Sprintf("{secret: %q}", "whsec_-_"+bare[2:]), []string{"secret"}},
		{"line break", fmt.Sprintf("{secret: %q}", secretA+"\n"), []string{"secret"}},
		{"too short", fmt.Sprintf("{secret: %q}", short), []string{"secret"}},
		{"too long", fmt.Sprintf("{secret: %q}", long), []string{"secret"}},
		{"not a string", fmt.Sprintf("{secret: [%q]}", secretA), []string{"secret"}},
		{"tagged", fmt.Sprintf("{secret: !!binary %q}", secretA), []string{"secret"}},
		{"tagged int", fmt.Sprintf("{secret: !!int %q}", secretA), []string{"secret"}},
		{"previous not a list", fmt.Sprintf("{secret: %q, previous_secrets: %q}", secretA, secretB), []string{"previous_secrets"}},
		{"bad previous secret", fmt.Sprintf("{secret: %q, previous_secrets: [%q, %q]}", secretA, secretB, short), []string{"previous_secrets[1]"}},
		{"empty previous secret", fmt.Sprintf("{secret: %q, previous_secrets: ['']}", secretA), []string{"previous_secrets[0]"}},
		{"previous repeats secret", fmt.Sprintf("{secret: %q, previous_secrets: [%q]}", secretA, secretA), []string{"previous_secrets[0]"}},
		{"every problem at once", fmt.Sprintf("{secret: %q, previous_secrets: [%q, %q, %q]}", bare, badB64, secretB, long), []string{"secret", "previous_secrets[0]", "previous_secrets[2]"}},
		{"every decoding problem at once", fmt.Sprintf("{secret: [%q], previous_secrets: [%q, {}], extra: 1}", secretA, secretB), []string{"secret", "previous_secrets[1]", "extra"}},
	}
	secrets := []string{secretA, secretB, bare, short, long, badB64, unpadded}
	var golden strings.Builder
	reg := builtin.Registry()
	for _, c := range cases {
		var n *yaml.Node
		if c.config != "" {
			n = node(t, c.config)
		}
		_, err := reg.Check(hmac.Name, n)
		var ps config.Problems
		if !errors.As(err, &ps) {
			t.Errorf("%s: got %v, want config.Problems", c.name, err)
			continue
		}
		var paths []string
		for _, p := range ps {
			paths = append(paths, p.Path)
		}
		if fmt.Sprint(paths) != fmt.Sprint(c.paths) {
			t.Errorf("%s: problems at %q, want %q:\n%v", c.name, paths, c.paths, err)
		}
		for _, s := range secrets {
			enc := strings.TrimPrefix(s, "whsec_")
			if strings.Contains(err.Error(), enc[:12]) {
				t.Errorf("%s: the error shows a secret: %v", c.name, err)
			}
		}
		fmt.Fprintf(&golden, "# %s\n%v\n\n", c.name, err)
	}
	checkGolden(t, filepath.Join("testdata", "config_errors.golden"), golden.String())
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it); got:\n%s", path, got)
	}
}

// TestSecretIsNotPrinted checks that printing a Config, as a log line might, shows no key.
func TestSecretIsNotPrinted(t *testing.T) {
	cfg := hmac.Config{Secret: secretA, PreviousSecrets: []hmac.Secret{secretB}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, cfg)
		if strings.Contains(out, secretA[6:20]) || strings.Contains(out, secretB[6:20]) {
			t.Errorf("Sprintf(%q) = %s", verb, out)
		}
	}
}

// TestReceiverWithStandardLibrary sends real requests to a receiver that verifies them with
// nothing but crypto/hmac, crypto/sha256 and encoding/base64, as the README's snippet does.
func TestReceiverWithStandardLibrary(t *testing.T) {
	type received struct {
		header http.Header
		body   []byte
	}
	var (
		mu       sync.Mutex
		got      []received
		receiver = secretA // the secret the receiver knows
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, received{r.Header.Clone(), body})
		secret := receiver
		mu.Unlock()
		if err := verifyStd(secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	send := func(t *testing.T, req *http.Request) int {
		t.Helper()
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNoContent {
			t.Logf("receiver: %d %s", resp.StatusCode, bytes.TrimSpace(msg))
		}
		return resp.StatusCode
	}
	body := []byte(`{"type":"invoice.paid","data":{"amount":1200,"note":"café ✓"}}`)
	signed := newPlugin(t, fmt.Sprintf("{secret: %q}", secretA))

	t.Run("attempt and retry", func(t *testing.T) {
		req := newRequest(t, srv.URL, body)
		now := time.Now().Unix()
		prepare(t, signed, req, "msg_wire", now, body)
		if code := send(t, req); code != http.StatusNoContent {
			t.Fatalf("first attempt: %d", code)
		}
		// The retry reuses the request, as retryablehttp does, with a new timestamp.
		prepare(t, signed, req, "msg_wire", now+2, body)
		req.Body, _ = req.GetBody()
		if code := send(t, req); code != http.StatusNoContent {
			t.Fatalf("retry: %d", code)
		}
		mu.Lock()
		last := got[len(got)-1]
		mu.Unlock()
		if v := last.header.Values("Webhook-Signature"); len(v) != 1 || strings.Count(v[0], "v1,") != 1 {
			t.Errorf("the receiver got Webhook-Signature %q, want one signature", v)
		}
		if !bytes.Equal(last.body, body) {
			t.Errorf("the receiver got body %q", last.body)
		}
	})

	t.Run("during rotation the old secret still verifies", func(t *testing.T) {
		mu.Lock()
		receiver = secretB
		mu.Unlock()
		defer func() { mu.Lock(); receiver = secretA; mu.Unlock() }()
		rotating := newPlugin(t, fmt.Sprintf("{secret: %q, previous_secrets: [%q]}", secretA, secretB))
		req := newRequest(t, srv.URL, body)
		prepare(t, rotating, req, "msg_rotating", time.Now().Unix(), body)
		if code := send(t, req); code != http.StatusNoContent {
			t.Fatalf("rotating sender, receiver with the previous secret: %d", code)
		}
		req = newRequest(t, srv.URL, body)
		prepare(t, signed, req, "msg_rotated", time.Now().Unix(), body)
		if code := send(t, req); code != http.StatusUnauthorized {
			t.Fatalf("sender without the previous secret: %d, want 401", code)
		}
	})

	// The receiver is not a rubber stamp: a changed body, a changed id or an old timestamp
	// is refused.
	t.Run("tampered body", func(t *testing.T) {
		req := newRequest(t, srv.URL, []byte(`{"type":"invoice.paid","data":{"amount":9999}}`))
		prepare(t, signed, req, "msg_tampered", time.Now().Unix(), body)
		if code := send(t, req); code != http.StatusUnauthorized {
			t.Fatalf("%d, want 401", code)
		}
	})
	t.Run("changed id", func(t *testing.T) {
		req := newRequest(t, srv.URL, body)
		prepare(t, signed, req, "msg_original", time.Now().Unix(), body)
		req.Header.Set("Webhook-Id", "msg_replayed")
		if code := send(t, req); code != http.StatusUnauthorized {
			t.Fatalf("%d, want 401", code)
		}
	})
	t.Run("old timestamp", func(t *testing.T) {
		req := newRequest(t, srv.URL, body)
		prepare(t, signed, req, "msg_old", time.Now().Add(-10*time.Minute).Unix(), body)
		if code := send(t, req); code != http.StatusUnauthorized {
			t.Fatalf("%d, want 401", code)
		}
	})
}

// TestApplyNeedsTheGatewayHeaders checks that Apply refuses to sign without Webhook-Id or a
// Webhook-Timestamp in Unix seconds, and sets no signature then.
func TestApplyNeedsTheGatewayHeaders(t *testing.T) {
	p := newPlugin(t, fmt.Sprintf("{secret: %q}", secretA))
	cases := []struct{ name, id, ts string }{
		{"no id", "", "1767225600"},
		{"no timestamp", "msg_1", ""},
		{"milliseconds with a fraction", "msg_1", "1767225600.5"},
		{"plus sign", "msg_1", "+1767225600"},
		{"leading zero", "msg_1", "01767225600"},
		{"RFC 3339", "msg_1", "2026-01-01T00:00:00Z"},
	}
	for _, c := range cases {
		req := newRequest(t, "https://receiver.example/hook", nil)
		if c.id != "" {
			req.Header.Set("Webhook-Id", c.id)
		}
		if c.ts != "" {
			req.Header.Set("Webhook-Timestamp", c.ts)
		}
		if err := p.Apply(context.Background(), req, nil); err == nil {
			t.Errorf("%s: signed", c.name)
		}
		if v := req.Header.Get("Webhook-Signature"); v != "" {
			t.Errorf("%s: Webhook-Signature %q", c.name, v)
		}
	}
}

// TestConcurrentApply shares one plugin between goroutines, as deliveries do (run with -race).
func TestConcurrentApply(t *testing.T) {
	p := newPlugin(t, fmt.Sprintf("{secret: %q, previous_secrets: [%q]}", secretA, secretB))
	now := time.Now()
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte(fmt.Sprintf(`{"n":%d}`, i))
			req := newRequest(t, "https://receiver.example/hook", body)
			req.Header.Set("Webhook-Id", fmt.Sprintf("msg_%d", i))
			req.Header.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix()+int64(i%3), 10))
			if err := p.Apply(context.Background(), req, body); err != nil {
				t.Error(err)
				return
			}
			for _, s := range []string{secretA, secretB} {
				if err := verifyStd(s, req.Header, body, now, time.Minute); err != nil {
					t.Errorf("request %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
}

// FuzzConfig feeds arbitrary secrets through the YAML path. Nothing panics; a refused secret
// gets problems that do not repeat it; an accepted one signs so that a standard-library
// verifier holding that secret alone accepts the signature.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{exampleSecret, secretA, secretC, "", "whsec_", "whsec_====", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_\n", "whsec_" + strings.Repeat("A", 88)} {
		f.Add(s, secretB)
	}
	f.Add(secretA, "whsec_a")
	f.Fuzz(func(t *testing.T, secret, previous string) {
		str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
		n := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			str("secret"), str(secret),
			str("previous_secrets"), {Kind: yaml.SequenceNode, Content: []*yaml.Node{str(previous)}},
		}}
		p, err := hmac.Factory(n)
		if err != nil {
			var ps config.Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %v is not config.Problems", err)
			}
			for _, pr := range ps {
				for _, s := range []string{secret, previous} {
					// Long enough that it cannot be a word of the message by chance.
					if enc := strings.TrimPrefix(s, "whsec_"); len(enc) >= 20 && strings.Contains(pr.Message, enc) {
						t.Fatalf("problem %q repeats a secret", pr)
					}
				}
			}
			return
		}
		body := []byte(`{"type":"fuzz"}`)
		now := time.Unix(1767225600, 0)
		req := newRequest(t, "https://receiver.example/hook", body)
		req.Header.Set("Webhook-Id", "msg_fuzz")
		req.Header.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
		if err := p.Apply(context.Background(), req, body); err != nil {
			t.Fatal(err)
		}
		if parts := strings.Split(req.Header.Get("Webhook-Signature"), " "); len(parts) != 2 {
			t.Fatalf("Webhook-Signature %q, want two signatures", req.Header.Get("Webhook-Signature"))
		}
		for _, s := range []string{secret, previous} {
			if err := verifyStd(s, req.Header, body, now, time.Minute); err != nil {
				t.Fatalf("accepted secret does not verify: %v", err)
			}
		}
	})
}
