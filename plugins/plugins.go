// Package plugins defines the per-subscription plugins that prepare every outbound delivery
// attempt (authentication, extra headers, signatures) and the Registry that makes them from
// configuration. Each plugin lives in a subpackage of its own; builtin assembles them.
package plugins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
)

// Plugin prepares one outbound attempt. Apply runs on every attempt, retries included, must be
// safe for concurrent use, and uses Header.Set, never Add, so that a retry does not repeat a
// header. body is the exact request body; Apply must not change it.
type Plugin interface {
	Apply(ctx context.Context, req *http.Request, body []byte) error
}

// Factory decodes cfg strictly into the plugin's own Config type (see Typed) and validates it. It does no I/O. cfg may be a zero Node when the configuration names none.
type Factory func(cfg *yaml.Node) (Plugin, error)

// Typed returns the Factory of a plugin whose configuration is a C: it decodes the node
// strictly into a C (config.DecodeStrict, so problems carry their paths) and passes it to
// newPlugin, which validates it and makes the plugin.
func Typed[C any, P Plugin](newPlugin func(C) (P, error)) Factory {
	return func(node *yaml.Node) (Plugin, error) {
		var cfg C
		if err := config.DecodeStrict(node, &cfg); err != nil {
			return nil, err
		}
		p, err := newPlugin(cfg)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

// Registry maps plugin names to their factories. The zero value is not usable; use
// NewRegistry. A Registry is safe for concurrent use once registration is done.
type Registry struct {
	factories map[string]Factory
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{factories: make(map[string]Factory)}
}

// Register makes a plugin available under name. Like database/sql's Register, it panics when
// name is registered twice or f is nil: both are programming errors.
func (r *Registry) Register(name string, f Factory) {
	if f == nil {
		panic("plugins: Register factory is nil for " + name)
	}
	if _, dup := r.factories[name]; dup {
		panic("plugins: Register called twice for " + name)
	}
	r.factories[name] = f
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.factories))
	for n := range r.factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New makes the plugin called name from cfg.
func (r *Registry) New(name string, cfg *yaml.Node) (Plugin, error) {
	f, ok := r.factories[name]
	if !ok {
		return nil, fmt.Errorf("unknown plugin %q; available: %v", name, r.Names())
	}
	if cfg == nil {
		cfg = &yaml.Node{}
	}
	return f(cfg)
}

// Check reports whether New would succeed, and returns the URLs the plugin sends requests to
// (see Requester). Factories do no I/O, so this is cheap.
func (r *Registry) Check(name string, cfg *yaml.Node) ([]string, error) {
	p, err := r.New(name, cfg)
	if err != nil {
		return nil, err
	}
	if rq, ok := p.(Requester); ok {
		return rq.RequestURLs(), nil
	}
	return nil, nil
}

// Requester is a Plugin that sends requests of its own. Its URLs are held to the rules of
// delivery targets (security.require_https, allowed_hosts, no private addresses) when its
// configuration is loaded, as they are when the requests are made.
type Requester interface {
	RequestURLs() []string
}

// ResponseObserver is a Plugin that wants to see the answer to each attempt it prepared:
// oauth2 drops its cached token on a 401. Observe must be safe for concurrent use.
type ResponseObserver interface {
	Observe(req *http.Request, resp *http.Response)
}

type clientKey struct{}

// WithClient returns ctx carrying the HTTP client deliveries use. A plugin that makes requests
// of its own (oauth2 fetching a token) takes it from the context it is applied with, so that
// they keep the delivery rules: the SSRF guard, no redirects, no environment proxy.
func WithClient(ctx context.Context, c *http.Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// ClientFrom returns the client WithClient put in ctx. Without one it returns a client that
// refuses every request: a plugin's requests go under the delivery rules or not at all.
func ClientFrom(ctx context.Context) *http.Client {
	if c, ok := ctx.Value(clientKey{}).(*http.Client); ok && c != nil {
		return c
	}
	return &http.Client{Transport: refuse{}}
}

type refuse struct{}

func (refuse) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("plugins: no delivery client in the context")
}
