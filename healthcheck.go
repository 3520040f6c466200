package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
)

const healthcheckHelp = `usage: gateway healthcheck [--config FILE]

Asks GET /readyz of the gateway the configuration describes (its listen address; 0.0.0.0 and
:: are asked on loopback) and exits 0 when it answers 200 within 3s, 1 otherwise. Made for a
container's HEALTHCHECK. A configuration that does not load fails the check too.
`

// healthcheckTimeout bounds gateway healthcheck, well inside Docker's HEALTHCHECK --timeout.
const healthcheckTimeout = 3 * time.Second

// healthcheck asks GET /readyz on every listener of the gateway src configures, and returns
// nil when each answers 200 before timeout.
func healthcheck(src configSource, timeout time.Duration) error {
	cfg, _, err := src.load(builtin.Registry())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// No proxy from the environment, no keep-alive: one plain request to this machine.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	for _, addr := range readyzAddrs(cfg) {
		url := "http://" + dialable(addr) + "/readyz"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", url, resp.Status)
		}
	}
	return nil
}

// readyzAddrs are the listen addresses whose /readyz gateway healthcheck asks: listen, and
// admin.listen when it is set (both serve the probes).
func readyzAddrs(cfg *config.Config) []string {
	if cfg.Admin.Listen != "" {
		return []string{cfg.Listen, cfg.Admin.Listen}
	}
	return []string{cfg.Listen}
}

// dialable is a listen address to connect to: an unspecified host (0.0.0.0, ::, or none, all
// of this machine's addresses) is asked on loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" {
		host = "127.0.0.1"
	} else if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.Is6() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}
