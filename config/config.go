// Package config loads and checks gateway.yaml, the gateway's one configuration file.
//
// Load decodes the file strictly (an unknown key is an error naming its YAML path), expands
// ${VAR} and ${VAR:-default} from the environment in every scalar value, starts from Default
// for every key the file leaves out, and validates the result. Every problem found is reported
// at once, as a Problems value, each with its YAML path.
package config

import (
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole of gateway.yaml.
type Config struct {
	// Listen is the address the HTTP server listens on. GATEWAY_LISTEN overrides it. With
	// Admin.Listen set, it serves only ingest (POST /v1/events) and the health probes.
	Listen   string   `yaml:"listen"`
	Admin    Admin    `yaml:"admin"`
	Ingest   Ingest   `yaml:"ingest"`
	Store    Store    `yaml:"store"`
	Events   Events   `yaml:"events"`
	Delivery Delivery `yaml:"delivery"`
	Security Security `yaml:"security"`

	Telemetry Telemetry `yaml:"telemetry"`

	// MaxConnections bounds the connections each listener serves at once; more are answered
	// 503 and closed.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP bounds the connections one client address (an IPv4 address, an IPv6
	// /64) may hold open to a listener; more are answered 429 and closed. Loopback clients
	// count only toward MaxConnections. 0 turns this bound off (MaxConnections still holds).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// ShutdownTimeout bounds how long a stop (SIGTERM, SIGINT) waits for HTTP requests in
	// flight once the listener is closed; requests still open then are abandoned (their
	// events were not acknowledged). Beside it, the delivery engine lets attempts in flight
	// finish for up to delivery.timeout + 5s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Subscriptions are declared in the file and owned by it: synced into the store at start and
	// on SIGHUP, created or updated by ID, deleted when removed from the file.
	Subscriptions []Subscription `yaml:"subscriptions"`
}

// Admin configures access to the management API.
type Admin struct {
	// Tokens are the bearer tokens the management API accepts. With none (an empty list),
	// serve generates a token for the run and prints it. Empty strings (an unset ${VAR}) are
	// dropped, but a list that has entries and none left is refused by Parse, naming the
	// variables, unless each of them has a default (${VAR:-}).
	Tokens []string `yaml:"tokens"`
	// RevealSecrets makes the API return stored passwords in clear instead of "********".
	RevealSecrets bool `yaml:"reveal_secrets"`
	// Listen, when set, is a listener of its own for the management API, /metrics and the
	// health probes, which are then not served on the main listener. GATEWAY_ADMIN_LISTEN
	// overrides it.
	Listen string `yaml:"listen"`
	// Console serves the web console at GET /console, beside the management API (on
	// admin.listen when it is set). It signs in with an admin token. false turns it off.
	Console bool `yaml:"console"`
}

// Ingest configures POST /v1/events, where producers post events.
type Ingest struct {
	// Tokens are the bearer tokens producers must send; none (an empty list) means no token
	// is required. As with Admin.Tokens, a list that has entries but none once expanded (an
	// unset ${VAR}) is refused by Parse: it never opens the endpoint.
	Tokens []string `yaml:"tokens"`
	// MaxBodyBytes is the largest request body accepted; a larger one is answered 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// Store selects and configures the durable store.
type Store struct {
	// Driver is "sqlite" (embedded, the default) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is a file path for sqlite, a postgres:// URL for postgres.
	DSN string `yaml:"dsn"`
	// Retention is how long finished deliveries and their attempts are kept; 0 keeps them forever.
	Retention time.Duration `yaml:"retention"`
	// Synchronous is SQLite's durability level: "normal" survives a process crash, "full"
	// also a power loss.
	Synchronous string `yaml:"synchronous"`
	// MaxConns is PostgreSQL's connection pool size, per replica; 0 is pgx's default (the
	// greater of 4 and the number of CPUs). The store holds one more connection, to listen
	// for the other replicas' changes.
	MaxConns int `yaml:"max_conns"`
	// EncryptionKey is the key stored secrets (registration passwords, plugin configurations)
	// are encrypted under with AES-256-GCM: the standard base64 of 32 random bytes, as
	// `openssl rand -base64 32` prints. Empty stores them in clear, and serve says so at start.
	EncryptionKey string `yaml:"encryption_key"`
	// PreviousEncryptionKeys open secrets stored under earlier keys; at start every secret not
	// under EncryptionKey is encrypted again under it (or stored in clear when it is empty).
	// Empty entries (an unset ${VAR}) are ignored.
	PreviousEncryptionKeys []string `yaml:"previous_encryption_keys"`
}

// Events declares the event types producers may post.
type Events struct {
	// Types are the accepted event types.
	Types []string `yaml:"types"`
	// Default are the types a subscription receives when it names none.
	Default []string `yaml:"default"`
}

// Delivery configures how events are sent to subscribers.
type Delivery struct {
	// Timeout bounds one HTTP attempt.
	Timeout time.Duration `yaml:"timeout"`
	// Schedule is the list of waits between durable retries; when it is exhausted the delivery
	// has failed.
	Schedule []time.Duration `yaml:"schedule"`
	// Jitter spreads each wait by up to this fraction either way (0.2 is ±20%).
	Jitter float64 `yaml:"jitter"`
	// QuickRetries is how many in-process retries an attempt gets before a durable retry.
	QuickRetries int `yaml:"quick_retries"`
	// ErrorStateAfter is how many consecutive failed attempts put a subscription in error state.
	ErrorStateAfter int `yaml:"error_state_after"`
	// DisableAfter is how long a subscription may stay in error state with no success before
	// it is deactivated.
	DisableAfter time.Duration `yaml:"disable_after"`
	// MaxInFlight bounds the HTTP attempts in flight at once, across all subscriptions.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxInFlightPerSubscription bounds one subscription's attempts in flight, unless the
	// subscription sets its own max_in_flight. A failing subscription drops to one delivery at
	// a time (a probe) until an attempt succeeds, so failing targets cannot use up MaxInFlight.
	MaxInFlightPerSubscription int `yaml:"max_in_flight_per_subscription"`
	// Lease is how long a claimed delivery stays with the replica that claimed it; the lease
	// is renewed every third of it while the delivery's attempts run. A replica that dies
	// leaves its deliveries leased until their leases run out: another replica (PostgreSQL)
	// takes them over then, so a short lease makes the takeover prompt. At least 3s.
	Lease time.Duration `yaml:"lease"`
}

// Security holds the rules for delivery targets.
type Security struct {
	// RequireHTTPS refuses target URLs that are not https://.
	RequireHTTPS bool `yaml:"require_https"`
	// AllowPrivateNetworks lets deliveries reach loopback, RFC 1918, link-local and similar
	// addresses, which are refused by default.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
	// AllowedHosts, when not empty, are the only hosts targets may name: exact host names or
	// "*.suffix" patterns.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// AllowedCIDRs are private ranges that may still be reached when private networks are refused.
	AllowedCIDRs []string `yaml:"allowed_cidrs"`
}

// Telemetry configures traces and metrics.
type Telemetry struct {
	// ServiceName names the gateway in traces.
	ServiceName string  `yaml:"service_name"`
	Traces      Traces  `yaml:"traces"`
	Metrics     Metrics `yaml:"metrics"`
	// LogLevel is the least level logged: debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
}

// Traces configures the OpenTelemetry trace exporter.
type Traces struct {
	// Exporter is "none", "otlp" or "stdout".
	Exporter string `yaml:"exporter"`
	// Endpoint is the OTLP endpoint, such as http://127.0.0.1:4318. Empty defers to the
	// OTEL_EXPORTER_OTLP_* environment variables.
	Endpoint string `yaml:"endpoint"`
	// SampleRatio is the fraction of traces sampled, from 0 to 1.
	SampleRatio float64 `yaml:"sample_ratio"`
	// UIURL, when set, links every trace id the web console shows to the user's tracing UI:
	// an http:// or https:// URL in which {trace_id} stands for the id, such as
	// http://127.0.0.1:16686/trace/{trace_id} for Jaeger.
	UIURL string `yaml:"ui_url"`
}

// Metrics configures the metrics endpoint.
type Metrics struct {
	// Prometheus serves GET /metrics in the Prometheus text format.
	Prometheus bool `yaml:"prometheus"`
}

// Subscription is a webhook declared in the file.
type Subscription struct {
	// ID names the subscription; it is its id in the API too.
	ID string `yaml:"id"`
	// URL is where events are posted.
	URL string `yaml:"url"`
	// Events are the event types delivered; empty means events.default.
	Events []string `yaml:"events"`
	// Headers are sent with every delivery.
	Headers map[string]string `yaml:"headers"`
	// Plugins prepare every attempt, in order.
	Plugins []Plugin `yaml:"plugins"`

	// MaxInFlight bounds this subscription's HTTP attempts in flight at once, from 1 to
	// delivery.max_in_flight. Left out, delivery.max_in_flight_per_subscription applies.
	MaxInFlight *int `yaml:"max_in_flight"`
	// RateLimit bounds this subscription's attempts per second (0.5 is one every two seconds),
	// more than 0 and at most MaxRateLimit. Attempts over the limit wait their turn; none is
	// dropped. Left out, there is no limit.
	RateLimit *float64 `yaml:"rate_limit"`
	// Ordering is "fifo" to deliver one event at a time, in the order the events were
	// ingested: an event that keeps failing holds back the ones after it until it succeeds or
	// has failed for good, and throughput is one round trip at a time. Empty (the default)
	// delivers concurrently, in no particular order. With fifo, MaxInFlight may only be 1.
	Ordering string `yaml:"ordering"`
}

// OrderingFIFO is the Ordering that delivers a subscription's events one at a time, in order.
const OrderingFIFO = "fifo"

// Plugin names a plugin and holds its configuration, which the plugin decodes strictly.
type Plugin struct {
	Name   string    `yaml:"name"`
	Config yaml.Node `yaml:"config"`
}

// DefaultLease is delivery.lease when the file leaves it out.
const DefaultLease = 15 * time.Second

// MinLease is the shortest delivery.lease: renewals every third of it must stay well apart.
const MinLease = 3 * time.Second

// DefaultShutdownTimeout is shutdown_timeout when the file leaves it out.
const DefaultShutdownTimeout = 10 * time.Second

// Default returns the configuration used for every key a file leaves out.
func Default() *Config {
	types := []string{"transaction.state.updated", "task.state.updated"}
	return &Config{
		Listen: "127.0.0.1:8080",
		Admin:  Admin{Console: true},
		Ingest: Ingest{MaxBodyBytes: 1 << 20},
		Store: Store{
			Driver:      "sqlite",
			DSN:         "gateway.db",
			Retention:   168 * time.Hour,
			Synchronous: "normal",
		},
		Events: Events{
			Types:   types,
			Default: append([]string(nil), types...),
		},
		Delivery: Delivery{
			Timeout: 15 * time.Second,
			Schedule: []time.Duration{
				5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
				5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour,
			},
			Jitter:                     0.2,
			QuickRetries:               2,
			ErrorStateAfter:            5,
			DisableAfter:               120 * time.Hour,
			MaxInFlight:                512,
			MaxInFlightPerSubscription: 32,
			Lease:                      DefaultLease,
		},
		Security: Security{RequireHTTPS: true},
		Telemetry: Telemetry{
			ServiceName: "webhook-gateway",
			Traces:      Traces{Exporter: "none", SampleRatio: 1},
			Metrics:     Metrics{Prometheus: true},
			LogLevel:    "info",
		},

		MaxConnections:      10000,
		MaxConnectionsPerIP: 1000,
		ShutdownTimeout:     DefaultShutdownTimeout,
	}
}
