// Package headers is the headers plugin: static headers on every attempt, the same as a
// subscription's own headers.
package headers

import (
	"context"
	"maps"
	"net/http"
	"slices"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
)

// Name is the plugin's name in configuration.
const Name = "headers"

// Config maps header names to values.
type Config map[string]string

// Plugin sets its headers on every attempt.
type Plugin struct {
	header http.Header
}

var _ plugins.Plugin = (*Plugin)(nil)

// New returns the plugin for cfg, or an error saying what is wrong with it.
func New(cfg Config) (*Plugin, error) {
	var ps config.Problems
	h := make(http.Header, len(cfg))
	for _, name := range slices.Sorted(maps.Keys(cfg)) {
		if err := config.CheckHeader(name, cfg[name]); err != nil {
			ps.Add(name, "%v", err)
			continue
		}
		h.Set(name, cfg[name])
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return &Plugin{header: h}, nil
}

// Factory makes the plugin from its configuration.
var Factory = plugins.Typed(New)

// Apply sets the headers, replacing any earlier value of each.
func (p *Plugin) Apply(_ context.Context, req *http.Request, _ []byte) error {
	for name, values := range p.header {
		req.Header[name] = values
	}
	return nil
}
