package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Validate checks c and returns every problem found as a Problems value, or nil. plugins checks
// each subscription's plugins; nil skips that check.
func (c *Config) Validate(plugins PluginChecker) error {
	var ps Problems
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		ps.Add("listen", "must be host:port, such as 127.0.0.1:8080")
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			ps.Add("admin.listen", "must be host:port, such as 0.0.0.0:9090, or empty to serve the management API on listen")
		} else if c.Admin.Listen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
			ps.Add("admin.listen", "must differ from listen (%s), or be empty to serve the management API there", c.Listen)
		}
	}
	if c.MaxConnections < 1 || c.MaxConnections > 1_000_000 {
		ps.Add("max_connections", "must be a whole number from 1 to 1000000")
	}
	if c.MaxConnectionsPerIP < 0 {
		ps.Add("max_connections_per_ip", "must be a whole number, 0 for no bound of its own")
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownTimeout > time.Hour {
		ps.Add("shutdown_timeout", "must be more than 0 and at most 1h")
	}
	if c.Ingest.MaxBodyBytes <= 0 || c.Ingest.MaxBodyBytes > 64<<20 {
		ps.Add("ingest.max_body_bytes", "must be between 1 and 67108864")
	}

	switch c.Store.Driver {
	case "sqlite", "postgres":
	default:
		ps.Add("store.driver", "must be sqlite or postgres, not %q", c.Store.Driver)
	}
	if c.Store.DSN == "" {
		ps.Add("store.dsn", "must not be empty")
	}
	if c.Store.Retention < 0 {
		ps.Add("store.retention", "must not be negative (0 keeps everything)")
	}
	switch c.Store.Synchronous {
	case "normal", "full":
	default:
		ps.Add("store.synchronous", "must be normal or full, not %q", c.Store.Synchronous)
	}
	if c.Store.MaxConns < 0 || c.Store.MaxConns > math.MaxInt32 {
		ps.Add("store.max_conns", "must be a whole number from 0 (pgx's default) to %d", math.MaxInt32)
	}
	if _, err := c.Store.SecretBox(); err != nil {
		ps = append(ps, err.(Problems)...)
	}

	if len(c.Events.Types) == 0 {
		ps.Add("events.types", "must name at least one event type")
	}
	seen := make(map[string]bool)
	for i, t := range c.Events.Types {
		if !eventTypePattern.MatchString(t) {
			ps.Add(fmt.Sprintf("events.types[%d]", i), "%q is not an event type name (letters, digits, '.', '_', '-')", t)
		} else if seen[t] {
			ps.Add(fmt.Sprintf("events.types[%d]", i), "%q is listed twice", t)
		}
		seen[t] = true
	}
	if len(c.Events.Default) == 0 {
		ps.Add("events.default", "must name at least one event type")
	}
	for i, t := range c.Events.Default {
		if !seen[t] {
			ps.Add(fmt.Sprintf("events.default[%d]", i), "%q is not one of events.types", t)
		}
	}

	d := c.Delivery
	if d.Timeout <= 0 || d.Timeout > 5*time.Minute {
		ps.Add("delivery.timeout", "must be more than 0 and at most 5m")
	}
	for i, w := range d.Schedule {
		if w <= 0 {
			ps.Add(fmt.Sprintf("delivery.schedule[%d]", i), "must be more than 0")
		}
	}
	if d.Jitter < 0 || d.Jitter >= 1 {
		ps.Add("delivery.jitter", "must be at least 0 and less than 1")
	}
	if d.QuickRetries < 0 || d.QuickRetries > 10 {
		ps.Add("delivery.quick_retries", "must be between 0 and 10")
	}
	if d.ErrorStateAfter < 1 {
		ps.Add("delivery.error_state_after", "must be at least 1")
	}
	if d.DisableAfter <= 0 {
		ps.Add("delivery.disable_after", "must be more than 0")
	}
	if d.MaxInFlight < 1 || d.MaxInFlight > 100000 {
		ps.Add("delivery.max_in_flight", "must be between 1 and 100000")
	}
	if d.MaxInFlightPerSubscription < 1 || d.MaxInFlightPerSubscription > d.MaxInFlight {
		ps.Add("delivery.max_in_flight_per_subscription", "must be at least 1 and at most delivery.max_in_flight")
	}
	if d.Lease < MinLease || d.Lease > time.Hour {
		ps.Add("delivery.lease", "must be at least %s and at most 1h", MinLease)
	}

	for i, h := range c.Security.AllowedHosts {
		if err := checkHostPattern(h); err != nil {
			ps.Add(fmt.Sprintf("security.allowed_hosts[%d]", i), "%v", err)
		}
	}
	for i, cidr := range c.Security.AllowedCIDRs {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			ps.Add(fmt.Sprintf("security.allowed_cidrs[%d]", i), "%q is not a CIDR range such as 10.1.0.0/16", cidr)
		}
	}

	if c.Telemetry.ServiceName == "" {
		ps.Add("telemetry.service_name", "must not be empty")
	}
	switch c.Telemetry.Traces.Exporter {
	case "none", "otlp", "stdout":
	default:
		ps.Add("telemetry.traces.exporter", "must be none, otlp or stdout, not %q", c.Telemetry.Traces.Exporter)
	}
	if e := c.Telemetry.Traces.Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.Add("telemetry.traces.endpoint", "must be an http:// or https:// URL, such as http://127.0.0.1:4318")
		}
	}
	if e := c.Telemetry.Traces.UIURL; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			!strings.Contains(e, "{trace_id}") {
			ps.Add("telemetry.traces.ui_url", "must be an http:// or https:// URL with {trace_id} where the id goes, such as http://127.0.0.1:16686/trace/{trace_id}")
		}
	}
	switch c.Telemetry.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		ps.Add("telemetry.log_level", "must be debug, info, warn or error, not %q", c.Telemetry.LogLevel)
	}
	if r := c.Telemetry.Traces.SampleRatio; r < 0 || r > 1 {
		ps.Add("telemetry.traces.sample_ratio", "must be between 0 and 1")
	}

	ids := make(map[string]int)
	for i, s := range c.Subscriptions {
		path := fmt.Sprintf("subscriptions[%d]", i)
		switch {
		case s.ID == "":
			ps.Add(path+".id", "must not be empty")
		case !subscriptionIDPattern.MatchString(s.ID):
			ps.Add(path+".id", "%q must be 1 to 64 letters, digits, '.', '_' or '-'", s.ID)
		default:
			if j, dup := ids[s.ID]; dup {
				ps.Add(path+".id", "%q is also the id of subscriptions[%d]", s.ID, j)
			}
			ids[s.ID] = i
		}
		if err := c.Security.CheckURL(s.URL); err != nil {
			ps.Add(path+".url", "%v", err)
		}
		for j, t := range s.Events {
			if err := c.Events.Check(t); err != nil {
				ps.Add(fmt.Sprintf("%s.events[%d]", path, j), "%v", err)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(s.Headers)) {
			if err := CheckSubscriptionHeader(name, s.Headers[name]); err != nil {
				ps.Add(path+".headers."+name, "%v", err)
			}
		}
		if s.MaxInFlight != nil {
			if err := d.CheckMaxInFlight(*s.MaxInFlight); err != nil {
				ps.Add(path+".max_in_flight", "%v", err)
			} else if *s.MaxInFlight > 1 && s.Ordering == OrderingFIFO {
				ps.Add(path+".max_in_flight", "must be 1 or left out with ordering: fifo, which delivers one at a time")
			}
		}
		if s.RateLimit != nil {
			if err := CheckRateLimit(*s.RateLimit); err != nil {
				ps.Add(path+".rate_limit", "%v", err)
			}
		}
		if s.Ordering != "" && s.Ordering != OrderingFIFO {
			ps.Add(path+".ordering", "must be fifo or empty, not %q", s.Ordering)
		}
		for j, p := range s.Plugins {
			ppath := fmt.Sprintf("%s.plugins[%d]", path, j)
			if p.Name == "" {
				ps.Add(ppath+".name", "must not be empty")
				continue
			}
			if plugins == nil {
				continue
			}
			urls, err := plugins.Check(p.Name, &p.Config)
			var pps Problems
			switch {
			case errors.As(err, &pps):
				ps = append(ps, pps.Prefix(ppath+".config")...)
			case err != nil:
				ps.Add(ppath, "%v", err)
			}
			for _, u := range urls {
				if err := c.Security.CheckURL(u); err != nil {
					ps.Add(ppath+".config", "the plugin's URL %s", err)
				}
			}
		}
	}
	if len(ps) > 0 {
		return ps
	}
	return nil
}

// MaxRateLimit is the highest rate limit a subscription may have, in attempts per second.
const MaxRateLimit = 100000

// CheckMaxInFlight reports whether n may be a subscription's own limit of attempts in flight:
// from 1 to d.MaxInFlight.
func (d Delivery) CheckMaxInFlight(n int) error {
	if n < 1 || n > d.MaxInFlight {
		return fmt.Errorf("must be a whole number from 1 to %d (delivery.max_in_flight)", d.MaxInFlight)
	}
	return nil
}

// CheckRateLimit reports whether r may be a subscription's rate limit, in attempts per
// second: more than 0 and at most MaxRateLimit.
func CheckRateLimit(r float64) error {
	if !(r > 0 && r <= MaxRateLimit) { // NaN too
		return fmt.Errorf("must be more than 0 and at most %d (attempts per second)", MaxRateLimit)
	}
	return nil
}

var (
	eventTypePattern      = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	subscriptionIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// Check reports whether t is one of the accepted event types; the error lists them.
func (e Events) Check(t string) error {
	if slices.Contains(e.Types, t) {
		return nil
	}
	return fmt.Errorf("unknown event type %q; accepted: %s", t, strings.Join(e.Types, ", "))
}

// CheckURL reports whether raw may be a delivery target under s: an absolute http(s) URL
// (https only when RequireHTTPS), without credentials, whose host passes AllowedHosts and, when
// it is a literal address, CheckAddr. Names are resolved only when a delivery connects, where
// the dialer checks the address again (so DNS cannot be used to get past this).
func (s Security) CheckURL(raw string) error {
	if raw == "" {
		return errors.New("must not be empty")
	}
	if len(raw) > 2048 {
		return errors.New("must be at most 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && !s.RequireHTTPS:
	case s.RequireHTTPS:
		return errors.New("must start with https://")
	default:
		return errors.New("must start with https:// or http://")
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return errors.New("must name a host, such as https://example.com/hooks")
	}
	if u.User != nil {
		return errors.New("must not contain credentials; use the basic-auth plugin")
	}
	if port := u.Port(); port != "" {
		if p, err := netip.ParseAddrPort("0.0.0.0:" + port); err != nil || p.Port() == 0 {
			return fmt.Errorf("port %q is not valid", port)
		}
	}
	if !s.HostAllowed(u.Hostname()) {
		return fmt.Errorf("host %q is not in security.allowed_hosts", u.Hostname())
	}
	return s.checkHostAddr(u.Hostname())
}

// HostAllowed reports whether host may be a target: always when AllowedHosts is empty, else
// when it equals an entry or ends in the ".suffix" of a "*.suffix" entry (any case).
func (s Security) HostAllowed(host string) bool {
	if len(s.AllowedHosts) == 0 {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, pattern := range s.AllowedHosts {
		pattern = strings.TrimSuffix(strings.ToLower(pattern), ".")
		if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == pattern {
			return true
		}
	}
	return false
}

func checkHostPattern(p string) error {
	name := strings.TrimPrefix(p, "*.")
	if name == "" || strings.ContainsAny(name, "*/:@ ") {
		return fmt.Errorf("%q must be a host name or *.suffix", p)
	}
	return nil
}

// reservedHeaders are set by the gateway on every delivery and cannot be configured.
var reservedHeaders = []string{
	"Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection",
	"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature", "Traceparent", "Tracestate",
}

// CheckHeader reports whether a custom header may be sent with deliveries.
func CheckHeader(name, value string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("%q is not a valid header name", name)
	}
	if err := CheckHeaderValue(value); err != nil {
		return err
	}
	if slices.Contains(reservedHeaders, http.CanonicalHeaderKey(name)) {
		return fmt.Errorf("%s is set by the gateway and cannot be configured", http.CanonicalHeaderKey(name))
	}
	return nil
}

// credentialHeaders would be shown in clear by the API, so a subscription's headers cannot
// carry them; the plugins (basic-auth, bearer, headers), whose configs are never shown, can.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie"}

// CheckSubscriptionHeader is CheckHeader for a subscription's own headers, which the API shows:
// credentials are refused there.
func CheckSubscriptionHeader(name, value string) error {
	if err := CheckHeader(name, value); err != nil {
		return err
	}
	if slices.Contains(credentialHeaders, http.CanonicalHeaderKey(name)) {
		return fmt.Errorf("%s would be shown by the API; use the basic-auth, bearer or headers plugin", http.CanonicalHeaderKey(name))
	}
	return nil
}

// CheckHeaderValue reports whether value may be sent as a header value.
func CheckHeaderValue(value string) error {
	if !httpguts.ValidHeaderFieldValue(value) {
		return errors.New("must not contain control characters")
	}
	return nil
}
