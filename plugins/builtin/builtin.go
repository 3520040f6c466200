// Package builtin assembles the plugins that ship with the gateway.
package builtin

import (
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/plugins/basicauth"
	"github.com/webhookgw/gateway/plugins/bearer"
	"github.com/webhookgw/gateway/plugins/headers"
	"github.com/webhookgw/gateway/plugins/hmac"
	"github.com/webhookgw/gateway/plugins/oauth2"
)

// Registry returns a new Registry holding every built-in plugin.
func Registry() *plugins.Registry {
	r := plugins.NewRegistry()
	r.Register(basicauth.Name, basicauth.Factory)
	r.Register(bearer.Name, bearer.Factory)
	r.Register(headers.Name, headers.Factory)
	r.Register(oauth2.Name, oauth2.Factory)
	r.Register(hmac.Name, hmac.Factory)
	return r
}
