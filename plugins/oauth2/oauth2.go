// Package oauth2 is the oauth2 plugin: a client-credentials access token (RFC 6749 §4.4) on
// every attempt, fetched from the subscriber's token endpoint, cached until it expires, and
// fetched again after the target answers 401.
package oauth2

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	xoauth2 "golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
)

// Name is the plugin's name in configuration.
const Name = "oauth2"

// Config is the plugin's configuration.
type Config struct {
	TokenURL     string   `yaml:"token_url"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`
}

// Plugin sets Authorization: Bearer with a cached client-credentials token.
type Plugin struct {
	cc *clientcredentials.Config

	mu    sync.Mutex // held while fetching, so concurrent attempts share one fetch
	token *xoauth2.Token
	// refetched marks a token fetched because the target refused the one before: a 401 for
	// it does not make the plugin fetch again (a target that refuses every token would
	// otherwise have the token endpoint asked on every attempt). A success clears it.
	refetched bool
}

var (
	_ plugins.Plugin           = (*Plugin)(nil)
	_ plugins.ResponseObserver = (*Plugin)(nil)
	_ plugins.Requester        = (*Plugin)(nil)
)

// New returns the plugin for cfg, or an error saying what is wrong with it. It fetches nothing.
func New(cfg Config) (*Plugin, error) {
	var ps config.Problems
	if u, err := url.Parse(cfg.TokenURL); cfg.TokenURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		ps.Add("token_url", "must be an http:// or https:// URL")
	} else if u.User != nil {
		ps.Add("token_url", "must not contain credentials")
	}
	if cfg.ClientID == "" {
		ps.Add("client_id", "must not be empty")
	}
	if cfg.ClientSecret == "" {
		ps.Add("client_secret", "must not be empty")
	}
	for i, s := range cfg.Scopes {
		if s == "" {
			ps.Add(fmt.Sprintf("scopes[%d]", i), "must not be empty")
		}
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return &Plugin{cc: &clientcredentials.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		TokenURL:     cfg.TokenURL,
		Scopes:       cfg.Scopes,
		// HTTP Basic only: the secret never goes in a form body, even to retry.
		AuthStyle: xoauth2.AuthStyleInHeader,
	}}, nil
}

// RequestURLs returns the token_url, which is held to the rules of delivery targets.
func (p *Plugin) RequestURLs() []string { return []string{p.cc.TokenURL} }

// Factory makes the plugin from its configuration.
var Factory = plugins.Typed(New)

// Apply sets the Authorization header, fetching a token when there is no valid one. The fetch
// uses the delivery client from ctx (plugins.ClientFrom), under the same rules as deliveries.
func (p *Plugin) Apply(ctx context.Context, req *http.Request, _ []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.token.Valid() {
		tok, err := p.cc.Token(context.WithValue(ctx, xoauth2.HTTPClient, plugins.ClientFrom(ctx)))
		if err != nil {
			return fetchError(err)
		}
		p.token = tok
	}
	p.token.SetAuthHeader(req)
	return nil
}

// Observe drops the cached token when the target refused it with a 401, so that the next
// attempt fetches a new one; once: the token fetched for a 401 is kept through a second one,
// until a success or its expiry.
func (p *Plugin) Observe(req *http.Request, resp *http.Response) {
	if resp == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	current := p.token != nil && req.Header.Get("Authorization") == p.token.Type()+" "+p.token.AccessToken
	switch {
	case !current:
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		p.refetched = false
	case resp.StatusCode == http.StatusUnauthorized && !p.refetched:
		p.token, p.refetched = nil, true
	}
}

// fetchError says why a token could not be had without the token_url (its query may hold a
// secret) or the endpoint's answer.
func fetchError(err error) error {
	var re *xoauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return fmt.Errorf("oauth2: the token endpoint answered HTTP %d", re.Response.StatusCode)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("oauth2: fetching a token: %v", err)
}
