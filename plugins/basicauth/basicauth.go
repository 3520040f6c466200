// Package basicauth is the basic-auth plugin: HTTP Basic authentication on every attempt.
package basicauth

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
)

// Name is the plugin's name in configuration.
const Name = "basic-auth"

// Config is the plugin's configuration.
type Config struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Plugin sets Authorization: Basic on every attempt.
type Plugin struct {
	cfg Config
}

var _ plugins.Plugin = (*Plugin)(nil)

// New returns the plugin for cfg, or an error saying what is wrong with it.
func New(cfg Config) (*Plugin, error) {
	var ps config.Problems
	if cfg.Username == "" {
		ps.Add("username", "must not be empty")
	} else if strings.Contains(cfg.Username, ":") {
		ps.Add("username", "must not contain ':'")
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return &Plugin{cfg: cfg}, nil
}

// Factory makes the plugin from its configuration.
var Factory = plugins.Typed(New)

// Apply sets the Authorization header.
func (p *Plugin) Apply(_ context.Context, req *http.Request, _ []byte) error {
	if req == nil {
		return errors.New("basic-auth: nil request")
	}
	req.SetBasicAuth(p.cfg.Username, p.cfg.Password)
	return nil
}
