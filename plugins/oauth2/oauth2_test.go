package oauth2_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/plugins/oauth2"
)

// tokenServer is a client-credentials token endpoint that counts what it issues.
type tokenServer struct {
	*httptest.Server
	issued    atomic.Int32
	expiresIn int
	delay     time.Duration
}

func newTokenServer(t *testing.T, expiresIn int) *tokenServer {
	ts := &tokenServer{expiresIn: expiresIn}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if err := r.ParseForm(); err != nil || !ok || id != "gateway" || secret != "s3cr3t-client" ||
			r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("scope") != "webhooks:write" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error": "invalid_client"}`)
			return
		}
		time.Sleep(ts.delay)
		n := ts.issued.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token": "tok-%d", "token_type": "Bearer", "expires_in": %d}`, n, ts.expiresIn)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func newPlugin(t *testing.T, tokenURL string) *oauth2.Plugin {
	t.Helper()
	p, err := oauth2.New(oauth2.Config{TokenURL: tokenURL, ClientID: "gateway", ClientSecret: "s3cr3t-client", Scopes: []string{"webhooks:write"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func apply(t *testing.T, p *oauth2.Plugin) *http.Request {
	t.Helper()
	req := httptest.NewRequest("POST", "https://target.example/hooks", nil)
	if err := p.Apply(plugins.WithClient(context.Background(), http.DefaultClient), req, nil); err != nil {
		t.Fatal(err)
	}
	return req
}

func TestTokenIsCachedAndSharedAcrossAttempts(t *testing.T) {
	ts := newTokenServer(t, 3600)
	p := newPlugin(t, ts.URL)
	for i := 0; i < 3; i++ {
		if got := apply(t, p).Header.Get("Authorization"); got != "Bearer tok-1" {
			t.Fatalf("attempt %d: Authorization %q", i, got)
		}
	}
	if n := ts.issued.Load(); n != 1 {
		t.Fatalf("%d tokens fetched, want 1", n)
	}
}

func TestConcurrentAttemptsShareOneFetch(t *testing.T) {
	ts := newTokenServer(t, 3600)
	ts.delay = 50 * time.Millisecond
	p := newPlugin(t, ts.URL)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Go(func() { apply(t, p) })
	}
	wg.Wait()
	if n := ts.issued.Load(); n != 1 {
		t.Fatalf("%d tokens fetched by 20 concurrent attempts, want 1", n)
	}
}

func TestFetchedAgainAfter401(t *testing.T) {
	ts := newTokenServer(t, 3600)
	p := newPlugin(t, ts.URL)
	first := apply(t, p)
	p.Observe(first, &http.Response{StatusCode: http.StatusUnauthorized})
	second := apply(t, p)
	if got := second.Header.Get("Authorization"); got != "Bearer tok-2" {
		t.Fatalf("after a 401: %q, want a new token", got)
	}
	// A late 401 for the old token does not throw away the new one.
	p.Observe(first, &http.Response{StatusCode: http.StatusUnauthorized})
	p.Observe(second, &http.Response{StatusCode: http.StatusOK})
	if got := apply(t, p).Header.Get("Authorization"); got != "Bearer tok-2" || ts.issued.Load() != 2 {
		t.Fatalf("%q after %d fetches", got, ts.issued.Load())
	}
}

func TestExpiredTokenIsFetchedAgain(t *testing.T) {
	ts := newTokenServer(t, 1) // inside oauth2's 10s expiry margin: expired at once
	p := newPlugin(t, ts.URL)
	apply(t, p)
	apply(t, p)
	if n := ts.issued.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestTokenEndpointErrorsAreClear(t *testing.T) {
	ts := newTokenServer(t, 3600)
	p, _ := oauth2.New(oauth2.Config{TokenURL: ts.URL, ClientID: "gateway", ClientSecret: "wrong-secret", Scopes: []string{"webhooks:write"}})
	req := httptest.NewRequest("POST", "https://target.example/", nil)
	err := p.Apply(plugins.WithClient(context.Background(), http.DefaultClient), req, nil)
	if err == nil || !strings.Contains(err.Error(), "oauth2") || strings.Contains(err.Error(), "wrong-secret") {
		t.Fatalf("error %v", err)
	}
	if req.Header.Get("Authorization") != "" {
		t.Fatal("Authorization set without a token")
	}
}

func TestConfigIsStrict(t *testing.T) {
	cases := []struct{ yaml, path string }{
		{"{token_url: https://idp.example/token, client_id: a, client_secret: b, scope: x}", "scope"},
		{"{client_id: a, client_secret: b}", "token_url"},
		{"{token_url: 'ftp://idp.example', client_id: a, client_secret: b}", "token_url"},
		{"{token_url: 'https://u:p@idp.example', client_id: a, client_secret: b}", "token_url"},
		{"{token_url: https://idp.example/token, client_secret: top-secret-value}", "client_id"},
		{"{token_url: https://idp.example/token, client_id: a}", "client_secret"},
		{"{token_url: https://idp.example/token, client_id: a, client_secret: b, scopes: ['']}", "scopes[0]"},
	}
	for _, c := range cases {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(c.yaml), &n); err != nil {
			t.Fatal(err)
		}
		_, err := oauth2.Factory(&n)
		var ps config.Problems
		if !errors.As(err, &ps) || ps[0].Path != c.path {
			t.Errorf("%s: %v, want a problem at %q", c.yaml, err, c.path)
		}
		if err != nil && strings.Contains(err.Error(), "top-secret-value") {
			t.Errorf("a problem shows the secret: %v", err)
		}
	}
}

// A target that refuses every token costs one extra fetch, not one per attempt; a success
// re-arms the refetch.
func TestRefusedTokensAreFetchedAgainOnce(t *testing.T) {
	ts := newTokenServer(t, 3600)
	p := newPlugin(t, ts.URL)
	for i := 0; i < 5; i++ {
		req := apply(t, p)
		p.Observe(req, &http.Response{StatusCode: http.StatusUnauthorized})
	}
	if n := ts.issued.Load(); n != 2 {
		t.Fatalf("%d fetches for five refused attempts, want 2", n)
	}
	req := apply(t, p)
	p.Observe(req, &http.Response{StatusCode: http.StatusOK})
	p.Observe(req, &http.Response{StatusCode: http.StatusUnauthorized})
	apply(t, p)
	if n := ts.issued.Load(); n != 3 {
		t.Fatalf("after a success, a 401 gives %d fetches in all, want 3", n)
	}
}

func TestFetchErrorsDoNotShowTheURLOrTheAnswer(t *testing.T) {
	ts := newTokenServer(t, 3600)
	p, _ := oauth2.New(oauth2.Config{TokenURL: ts.URL + "/t?api_key=QUERYSECRET", ClientID: "gateway", ClientSecret: "wrong"})
	err := p.Apply(plugins.WithClient(context.Background(), http.DefaultClient), httptest.NewRequest("POST", "https://t.example/", nil), nil)
	if err == nil || strings.Contains(err.Error(), "QUERYSECRET") || strings.Contains(err.Error(), "invalid_client") || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("error %v", err)
	}
	if got := p.RequestURLs(); len(got) != 1 || got[0] != ts.URL+"/t?api_key=QUERYSECRET" {
		t.Fatalf("RequestURLs %v", got)
	}
	// Without the delivery client in the context, nothing is sent.
	if err := newPlugin(t, ts.URL).Apply(context.Background(), httptest.NewRequest("POST", "https://t.example/", nil), nil); err == nil {
		t.Fatal("a token was fetched outside the delivery rules")
	}
}
