// Package bearer is the bearer plugin: a static bearer token on every attempt.
package bearer

import (
	"context"
	"net/http"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
)

// Name is the plugin's name in configuration.
const Name = "bearer"

// Config is the plugin's configuration.
type Config struct {
	Token string `yaml:"token"`
}

// Plugin sets Authorization: Bearer on every attempt.
type Plugin struct {
	header string
}

var _ plugins.Plugin = (*Plugin)(nil)

// New returns the plugin for cfg, or an error saying what is wrong with it.
func New(cfg Config) (*Plugin, error) {
	var ps config.Problems
	if cfg.Token == "" {
		ps.Add("token", "must not be empty")
	} else if err := config.CheckHeaderValue(cfg.Token); err != nil {
		ps.Add("token", "%v", err)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return &Plugin{header: "Bearer " + cfg.Token}, nil
}

// Factory makes the plugin from its configuration.
var Factory = plugins.Typed(New)

// Apply sets the Authorization header.
func (p *Plugin) Apply(_ context.Context, req *http.Request, _ []byte) error {
	req.Header.Set("Authorization", p.header)
	return nil
}
