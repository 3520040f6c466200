package config_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
)

var update = flag.Bool("update", false, "rewrite golden files")

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := config.Default().Validate(builtin.Registry()); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(nil, env(nil), builtin.Registry())
	if err != nil {
		t.Fatalf("an empty file: %v", err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.Delivery.Timeout != 15*time.Second || !cfg.Security.RequireHTTPS {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestShippedConfigValidates(t *testing.T) {
	cfg, err := config.Load(filepath.Join("..", "gateway.yaml"), builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Delivery.Schedule) != 9 || cfg.Delivery.Schedule[8] != 24*time.Hour {
		t.Fatalf("schedule %v", cfg.Delivery.Schedule)
	}
}

// TestProblems checks every message against testdata/problems.golden: each problem with its
// YAML path, all reported at once. go test ./config -update rewrites the golden file.
func TestProblems(t *testing.T) {
	data, err := os.ReadFile("testdata/problems.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.Parse(data, env(nil), builtin.Registry())
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("got %v, want Problems", err)
	}
	got := err.Error() + "\n"
	golden := "testdata/problems.golden"
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("problems differ from %s (rerun with -update to accept)\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestEnvExpansion(t *testing.T) {
	yaml := `
listen: "${HOST:-127.0.0.1}:${PORT}"
admin:
  tokens: ["${TOKEN}", "${UNSET}", "lit$eral", "$${NOT_A_VAR}"]
ingest:
  max_body_bytes: ${MAX}
delivery:
  timeout: ${TIMEOUT:-30s}
  quick_retries: ${RETRIES:-3}
security:
  require_https: ${HTTPS}
subscriptions:
  - id: a
    url: https://${HOST_NAME}/hooks
    plugins:
      - name: bearer
        config: { token: "${BEARER}" }
`
	cfg, err := config.Parse([]byte(yaml), env(map[string]string{
		"PORT": "9090", "TOKEN": "s3cret", "MAX": "2048", "TIMEOUT": "", "HTTPS": "false",
		"HOST_NAME": "example.com", "BEARER": "b",
	}), builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9090" {
		t.Errorf("listen %q", cfg.Listen)
	}
	if strings.Join(cfg.Admin.Tokens, ",") != "s3cret,lit$eral,${NOT_A_VAR}" {
		t.Errorf("tokens %q (unset ones must be dropped)", cfg.Admin.Tokens)
	}
	if cfg.Ingest.MaxBodyBytes != 2048 || cfg.Delivery.Timeout != 30*time.Second || cfg.Delivery.QuickRetries != 3 {
		t.Errorf("numbers from the environment: %+v %+v", cfg.Ingest, cfg.Delivery)
	}
	if cfg.Security.RequireHTTPS {
		t.Error("require_https: ${HTTPS} with HTTPS=false stayed true")
	}
	if cfg.Subscriptions[0].URL != "https://example.com/hooks" {
		t.Errorf("url %q", cfg.Subscriptions[0].URL)
	}
}

func TestExpand(t *testing.T) {
	lookup := env(map[string]string{"A": "1", "EMPTY": ""})
	cases := []struct{ in, out, err string }{
		{"plain", "plain", ""},
		{"${A}", "1", ""},
		{"x${A}y${A}", "x1y1", ""},
		{"${B}", "", ""},
		{"${B:-dflt}", "dflt", ""},
		{"${EMPTY:-dflt}", "dflt", ""},
		{"${A:-dflt}", "1", ""},
		{"${B:-a:-b}", "a:-b", ""},
		{"$$", "$$", ""},
		{"$${A}", "${A}", ""},
		{"cost $5", "cost $5", ""},
		{"trailing $", "trailing $", ""},
		{"${A", "", "unterminated"},
		{"${}", "", "bad variable name"},
		{"${1A}", "", "bad variable name"},
		{"${A B}", "", "bad variable name"},
	}
	for _, c := range cases {
		got, err := config.Expand(c.in, lookup)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Expand(%q): error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.out {
			t.Errorf("Expand(%q) = %q, %v; want %q", c.in, got, err, c.out)
		}
	}
}

func TestListenOverride(t *testing.T) {
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:1\n"), env(map[string]string{config.EnvListen: "0.0.0.0:8081"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:8081" {
		t.Fatalf("listen %q, want GATEWAY_LISTEN's", cfg.Listen)
	}
}

func TestAdminListen(t *testing.T) {
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:8080\n"), env(nil), nil)
	if err != nil || cfg.Admin.Listen != "" {
		t.Fatalf("default admin.listen %q, %v; want empty (everything on listen)", cfg.Admin.Listen, err)
	}
	cfg, err = config.Parse([]byte("admin:\n  listen: 127.0.0.1:9090\n"), env(map[string]string{config.EnvAdminListen: "0.0.0.0:9091"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != "0.0.0.0:9091" {
		t.Fatalf("admin.listen %q, want GATEWAY_ADMIN_LISTEN's", cfg.Admin.Listen)
	}
	for in, want := range map[string]string{
		"admin:\n  listen: nine":                                   "admin.listen: must be host:port, such as 0.0.0.0:9090, or empty to serve the management API on listen",
		"listen: 127.0.0.1:8080\nadmin:\n  listen: 127.0.0.1:8080": "admin.listen: must differ from listen (127.0.0.1:8080), or be empty to serve the management API there",
	} {
		_, err := config.Parse([]byte(in+"\n"), env(nil), nil)
		if err == nil || err.Error() != want {
			t.Errorf("%q:\ngot  %v\nwant %s", in, err, want)
		}
	}
}

func TestConnectionLimitKeys(t *testing.T) {
	cfg, err := config.Parse([]byte("max_connections: 500\n"), env(nil), nil)
	if err != nil || cfg.MaxConnections != 500 || cfg.MaxConnectionsPerIP != 1000 {
		t.Fatalf("max_connections 500 with the default per-IP bound above it: %+v, %v", cfg, err)
	}
	for in, want := range map[string]string{
		"max_connections: 0":         "max_connections: must be a whole number from 1 to 1000000",
		"max_connections_per_ip: -1": "max_connections_per_ip: must be a whole number, 0 for no bound of its own",
	} {
		_, err := config.Parse([]byte(in+"\n"), env(nil), nil)
		if err == nil || err.Error() != want {
			t.Errorf("%q:\ngot  %v\nwant %s", in, err, want)
		}
	}
}

// store.max_conns sizes PostgreSQL's pool: 0 (the default) leaves it to pgx; a negative size
// is refused.
func TestStoreMaxConns(t *testing.T) {
	cfg, err := config.Parse([]byte("store:\n  driver: postgres\n  dsn: postgres://db/gateway\n  max_conns: 8\n"), env(nil), nil)
	if err != nil || cfg.Store.MaxConns != 8 {
		t.Fatalf("max_conns: 8: %+v, %v", cfg.Store, err)
	}
	if cfg := config.Default(); cfg.Store.MaxConns != 0 {
		t.Fatalf("default max_conns %d, want 0 (pgx's default)", cfg.Store.MaxConns)
	}
	for in, want := range map[string]string{
		"-1":  "store.max_conns: must be a whole number from 0 (pgx's default) to 2147483647",
		"1.5": "store.max_conns: must be a whole number, not \"1.5\"",
	} {
		_, err := config.Parse([]byte("store:\n  max_conns: "+in+"\n"), env(nil), nil)
		if err == nil || err.Error() != want {
			t.Errorf("max_conns: %s:\ngot  %v\nwant %s", in, err, want)
		}
	}
}

func TestSubscriptionDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(`
subscriptions:
  - id: billing
    url: https://billing.example.com/hooks
    headers: { X-Team: billing }
    plugins:
      - name: basic-auth
        config: { username: u, password: p }
`), env(nil), builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Subscriptions[0]
	if s.ID != "billing" || s.Headers["X-Team"] != "billing" || s.Plugins[0].Name != "basic-auth" {
		t.Fatalf("%+v", s)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "none.yaml"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

func TestNotYAML(t *testing.T) {
	for _, in := range []string{"listen: [", "\t- x", "[1, 2]", "just a string"} {
		_, err := config.Parse([]byte(in), env(nil), nil)
		var ps config.Problems
		if !errors.As(err, &ps) {
			t.Errorf("%q: got %v, want Problems", in, err)
		}
	}
}

// A value that cannot be decoded into a string field is not repeated: it may be a secret.
func TestStringProblemsDoNotShowTheValue(t *testing.T) {
	_, err := config.Parse([]byte("admin:\n  tokens: [!!int secret-token-value]\n"), env(nil), nil)
	if err == nil {
		t.Fatal("a !!int-tagged word was accepted")
	}
	if strings.Contains(err.Error(), "secret-token-value") {
		t.Fatalf("the value is in the problem: %v", err)
	}
}

// A value that lost its colon becomes a key: the problem shows only its first word.
func TestUnknownKeyDoesNotEchoAValue(t *testing.T) {
	_, err := config.Parse([]byte("subscriptions:\n  - id: a\n    url: https://example.com\n    plugins:\n      - name: bearer\n        config: {token whsec_SUPERSECRETVALUE}\n"), env(nil), builtin.Registry())
	if err == nil || strings.Contains(err.Error(), "SUPERSECRET") || !strings.Contains(err.Error(), "config.token…") {
		t.Fatalf("%v", err)
	}
}

func TestSubscriptionDeliveryPolicy(t *testing.T) {
	cfg, err := config.Parse([]byte(`
delivery:
  max_in_flight: 64
subscriptions:
  - id: billing
    url: https://billing.example.com/hooks
    max_in_flight: 64
    rate_limit: 0.5
  - id: ledger
    url: https://ledger.example.com/hooks
    ordering: fifo
    max_in_flight: 1
    rate_limit: ${RATE}
  - id: plain
    url: https://plain.example.com/hooks
    max_in_flight: ~
    ordering: ""
`), env(map[string]string{"RATE": "50"}), builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	b, l, p := cfg.Subscriptions[0], cfg.Subscriptions[1], cfg.Subscriptions[2]
	if b.MaxInFlight == nil || *b.MaxInFlight != 64 || b.RateLimit == nil || *b.RateLimit != 0.5 || b.Ordering != "" {
		t.Errorf("billing: %+v", b)
	}
	if l.MaxInFlight == nil || *l.MaxInFlight != 1 || l.RateLimit == nil || *l.RateLimit != 50 || l.Ordering != config.OrderingFIFO {
		t.Errorf("ledger: %+v", l)
	}
	if p.MaxInFlight != nil || p.RateLimit != nil || p.Ordering != "" {
		t.Errorf("plain (nothing set): %+v", p)
	}
}

// Each bad policy key gets one problem at its own path, bounded by the running
// delivery.max_in_flight.
func TestSubscriptionDeliveryPolicyProblems(t *testing.T) {
	cases := []struct{ keys, want string }{
		{"max_in_flight: 0", "subscriptions[0].max_in_flight: must be a whole number from 1 to 8 (delivery.max_in_flight)"},
		{"max_in_flight: 9", "subscriptions[0].max_in_flight: must be a whole number from 1 to 8 (delivery.max_in_flight)"},
		{"max_in_flight: -1", "subscriptions[0].max_in_flight: must be a whole number from 1 to 8 (delivery.max_in_flight)"},
		{"max_in_flight: 2.5", `subscriptions[0].max_in_flight: must be a whole number, not "2.5"`},
		{"max_in_flight: many", `subscriptions[0].max_in_flight: must be a whole number, not "many"`},
		{`max_in_flight: ""`, `subscriptions[0].max_in_flight: must be a whole number, not ""`},
		{"max_in_flight: [1]", "subscriptions[0].max_in_flight: must be a whole number"},
		{"rate_limit: 0", "subscriptions[0].rate_limit: must be more than 0 and at most 100000 (attempts per second)"},
		{"rate_limit: -5", "subscriptions[0].rate_limit: must be more than 0 and at most 100000 (attempts per second)"},
		{"rate_limit: 100000.5", "subscriptions[0].rate_limit: must be more than 0 and at most 100000 (attempts per second)"},
		{"rate_limit: .inf", "subscriptions[0].rate_limit: must be more than 0 and at most 100000 (attempts per second)"},
		{"rate_limit: .nan", "subscriptions[0].rate_limit: must be more than 0 and at most 100000 (attempts per second)"},
		{"rate_limit: fast", `subscriptions[0].rate_limit: must be a number, not "fast"`},
		{"ordering: lifo", `subscriptions[0].ordering: must be fifo or empty, not "lifo"`},
		{"ordering: FIFO", `subscriptions[0].ordering: must be fifo or empty, not "FIFO"`},
		{"ordering: fifo\n    max_in_flight: 2", "subscriptions[0].max_in_flight: must be 1 or left out with ordering: fifo, which delivers one at a time"},
	}
	for _, c := range cases {
		t.Run(c.keys, func(t *testing.T) {
			yaml := "delivery:\n  max_in_flight: 8\n  max_in_flight_per_subscription: 4\nsubscriptions:\n  - id: a\n    url: https://example.com\n    " + c.keys + "\n"
			_, err := config.Parse([]byte(yaml), env(nil), builtin.Registry())
			var ps config.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("got %v, want Problems", err)
			}
			if len(ps) != 1 || ps[0].String() != c.want {
				t.Fatalf("problems:\n%v\nwant exactly:\n%s", err, c.want)
			}
		})
	}
	// Accepted at the bounds, fifo with 1 included.
	for _, keys := range []string{"max_in_flight: 1", "max_in_flight: 8", "rate_limit: 100000", "rate_limit: 0.001",
		"ordering: fifo\n    max_in_flight: 1", "ordering: fifo\n    rate_limit: 2"} {
		yaml := "delivery:\n  max_in_flight: 8\n  max_in_flight_per_subscription: 4\nsubscriptions:\n  - id: a\n    url: https://example.com\n    " + keys + "\n"
		if _, err := config.Parse([]byte(yaml), env(nil), builtin.Registry()); err != nil {
			t.Errorf("%q: %v", keys, err)
		}
	}
}

// yaml.v3 would turn 1.5 into 1 for a whole-number key; the loader refuses it.
func TestWholeNumberKeysRefuseFractions(t *testing.T) {
	_, err := config.Parse([]byte("delivery:\n  quick_retries: 1.5\n  timeout: 1.5\n"), env(nil), nil)
	want := "delivery.quick_retries: must be a whole number, not \"1.5\"\n" +
		"delivery.timeout: must be a duration such as 15s, 5m or 2h, not \"1.5\""
	if err == nil || err.Error() != want {
		t.Fatalf("got:\n%v\nwant:\n%s", err, want)
	}
}

// A token list that has entries but none once expanded is refused, naming each variable: an
// unset ${VAR} never opens ingest, nor has an admin token made up in its place. "No token" is
// an empty list, or a variable with a default (${VAR:-}). Each problem is reported once.
func TestTokenListsThatExpandToNothing(t *testing.T) {
	vars := env(map[string]string{"SET": "s3cret", "EMPTY": ""})
	hints := map[string]string{
		"admin":  "to have serve make a token for each run",
		"ingest": "to take events without a token",
	}
	cases := []struct {
		tokens string
		want   []string // problems; none: accepted with the tokens in keep
		keep   []string
	}{
		{`["${UNSET}"]`, []string{"K.tokens[0]: ${UNSET} is not set; set it, or write K.tokens: [] H"}, nil},
		{`["${EMPTY}"]`, []string{"K.tokens[0]: ${EMPTY} is empty; set it, or write K.tokens: [] H"}, nil},
		{`["${UNSET}", "${OTHER}"]`, []string{
			"K.tokens[0]: ${UNSET} is not set; set it, or write K.tokens: [] H",
			"K.tokens[1]: ${OTHER} is not set; set it, or write K.tokens: [] H"}, nil},
		{`["${UNSET}${EMPTY}"]`, []string{"K.tokens[0]: ${UNSET} is not set and ${EMPTY} is empty; set them, or write K.tokens: [] H"}, nil},
		{`[" ${UNSET} "]`, []string{"K.tokens[0]: ${UNSET} is not set; set it, or write K.tokens: [] H"}, nil},
		{`[""]`, []string{"K.tokens[0]: must not be empty; write K.tokens: [] H"}, nil},
		{`["${DEFAULTED:-}", "${UNSET}"]`, []string{"K.tokens[1]: ${UNSET} is not set; set it, or write K.tokens: [] H"}, nil},
		{`"${UNSET}"`, []string{"K.tokens: must be a list"}, nil},
		{`[[x]]`, []string{"K.tokens[0]: must be a string"}, nil},
		{`["${SET}", "${UNSET}"]`, nil, []string{"s3cret"}}, // one is left: the unset one is dropped
		{`["${DEFAULTED:-}"]`, nil, nil},
		{`["${UNSET:-fallback}"]`, nil, []string{"fallback"}},
		{`[]`, nil, nil},
		{`~`, nil, nil},
	}
	for _, key := range []string{"admin", "ingest"} {
		for _, c := range cases {
			t.Run(key+" "+c.tokens, func(t *testing.T) {
				cfg, err := config.Parse([]byte(key+":\n  tokens: "+c.tokens+"\n"), vars, nil)
				if c.want == nil {
					if err != nil {
						t.Fatal(err)
					}
					got := cfg.Ingest.Tokens
					if key == "admin" {
						got = cfg.Admin.Tokens
					}
					if strings.Join(got, ",") != strings.Join(c.keep, ",") {
						t.Fatalf("tokens %q, want %q", got, c.keep)
					}
					return
				}
				var ps config.Problems
				if !errors.As(err, &ps) {
					t.Fatalf("got %v, want Problems", err)
				}
				want := strings.NewReplacer("K.", key+".", "K:", key+":", " H", " "+hints[key]).Replace(strings.Join(c.want, "\n"))
				if !strings.HasPrefix(err.Error(), want) || len(ps) != len(c.want) {
					t.Fatalf("problems:\n%v\nwant:\n%s", err, want)
				}
			})
		}
	}
	// An absent key keeps the default: no ingest token, and a generated admin token.
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:9000\n"), vars, nil)
	if err != nil || cfg.Admin.Tokens != nil || cfg.Ingest.Tokens != nil {
		t.Fatalf("tokens %q and %q, err %v; want none", cfg.Admin.Tokens, cfg.Ingest.Tokens, err)
	}
}

func TestShutdownTimeout(t *testing.T) {
	cfg, err := config.Parse(nil, env(nil), nil)
	if err != nil || cfg.ShutdownTimeout != 10*time.Second {
		t.Fatalf("default shutdown_timeout %v, err %v; want 10s", cfg.ShutdownTimeout, err)
	}
	cfg, err = config.Parse([]byte("shutdown_timeout: ${GRACE}\n"), env(map[string]string{"GRACE": "45s"}), nil)
	if err != nil || cfg.ShutdownTimeout != 45*time.Second {
		t.Fatalf("shutdown_timeout %v, err %v; want 45s", cfg.ShutdownTimeout, err)
	}
	for in, want := range map[string]string{
		"0s":    "shutdown_timeout: must be more than 0 and at most 1h",
		"-1s":   "shutdown_timeout: must be more than 0 and at most 1h",
		"61m":   "shutdown_timeout: must be more than 0 and at most 1h",
		"soon":  `shutdown_timeout: must be a duration such as 15s, 5m or 2h, not "soon"`,
		"[10s]": "shutdown_timeout: must be a duration such as 15s, 5m or 2h",
	} {
		_, err := config.Parse([]byte("shutdown_timeout: "+in+"\n"), env(nil), nil)
		if err == nil || err.Error() != want {
			t.Errorf("shutdown_timeout: %s: got %v, want %s", in, err, want)
		}
	}
}
