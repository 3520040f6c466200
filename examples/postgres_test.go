package examples_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
)

// The files of the postgres example, relative to this package's directory.
const (
	postgresCompose = "postgres/docker-compose.yaml"
	postgresConfig  = "postgres/gateway.yaml"
	postgresHAProxy = "postgres/haproxy.cfg"
	postgresInitDB  = "postgres/initdb/10-gateway-role.sh"
	dockerfile      = "../Dockerfile"
)

// The services of the postgres example's compose file.
var (
	postgresReplicas = []string{"gateway-1", "gateway-2"}
	postgresServices = []string{"gateway-1", "gateway-2", "lb", "postgres", "receiver"}
)

// composeFile is the part of a compose file the postgres example uses. It is decoded strictly: a
// key it does not know (a typo, a key at the wrong level) fails the test.
type composeFile struct {
	Gateway  composeService            `yaml:"x-gateway"` // the replicas' shared definition
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
	Volumes map[string]*struct{} `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Expose      []string          `yaml:"expose"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		StartPeriod string   `yaml:"start_period"`
		Retries     int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	StopGracePeriod string    `yaml:"stop_grace_period"`
	DependsOn       dependsOn `yaml:"depends_on"`
	Restart         string    `yaml:"restart"`
	WorkingDir      string    `yaml:"working_dir"`
	Command         []string  `yaml:"command"`
}

// dependsOn is a service's depends_on, in either of compose's forms (a list of names, or a map
// of names to {condition}), as a map from name to condition ("service_started" for a list).
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = make(dependsOn)
	switch n.Kind {
	case yaml.SequenceNode:
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		for _, name := range names {
			(*d)[name] = "service_started"
		}
		return nil
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		for name, c := range m {
			(*d)[name] = c.Condition
		}
		return nil
	}
	return fmt.Errorf("line %d: depends_on must be a list or a map", n.Line)
}

// decodeCompose decodes a compose file strictly.
func decodeCompose(t *testing.T, file string) *composeFile {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &c
}

// composeVar matches compose's ${VAR}, ${VAR:-default} and ${VAR-default}; $$ is a literal $.
var composeVar = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}`)

// interpolate expands s as compose does, looking variables up in env: a variable unset (or, with
// ":-", empty) takes its default.
func interpolate(s string, env map[string]string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sm := composeVar.FindStringSubmatch(m)
		v, set := env[sm[1]]
		switch {
		case sm[2] == ":-" && v == "", sm[2] == "-" && !set:
			return sm[3]
		}
		return v
	})
}

// imageEnv returns the ENV the Dockerfile sets in the image: a replica's environment under the
// compose file's.
func imageEnv(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	env := make(map[string]string)
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ENV "); ok {
			for _, kv := range strings.Fields(rest) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
		}
	}
	if len(env) == 0 {
		t.Fatalf("%s sets no ENV", dockerfile)
	}
	return env
}

// replicaEnv is the environment a replica of the compose file runs with, with the compose
// variables taking their defaults (nothing set in the shell) over the image's ENV.
func replicaEnv(t *testing.T, s composeService) map[string]string {
	env := imageEnv(t)
	for k, v := range s.Environment {
		env[k] = interpolate(v, nil)
	}
	return env
}

// loadReplicaConfig loads the example's gateway.yaml as a replica would, with env.
func loadReplicaConfig(t *testing.T, env map[string]string) (*config.Config, error) {
	t.Helper()
	data, err := os.ReadFile(postgresConfig)
	if err != nil {
		t.Fatal(err)
	}
	return config.ParseSource(data, config.Source{Env: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}}, builtin.Registry())
}

// TestPostgresExampleCompose checks that the postgres example's compose file, gateway.yaml,
// haproxy.cfg and database set-up agree: both replicas run the same image, configuration and
// DSN; the DSN names the database, role and schema the set-up creates; the load balancer sends
// to both replicas' ports and checks them on /readyz; no secret is written out but a default
// marked local-only.
func TestPostgresExampleCompose(t *testing.T) {
	c := decodeCompose(t, postgresCompose)
	hap, err := os.ReadFile(postgresHAProxy)
	if err != nil {
		t.Fatal(err)
	}
	initdb, err := os.ReadFile(postgresInitDB)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range composeProblems(t, c, string(hap), string(initdb)) {
		t.Error(p)
	}
}

// TestPostgresExampleChecksCatchMistakes breaks the postgres example's files in ways the checks
// of TestPostgresExampleCompose must catch, one at a time.
func TestPostgresExampleChecksCatchMistakes(t *testing.T) {
	hap, err := os.ReadFile(postgresHAProxy)
	if err != nil {
		t.Fatal(err)
	}
	initdb, err := os.ReadFile(postgresInitDB)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(c *composeFile, hap *string)
	}{
		{"replicas with different DSNs", func(c *composeFile, _ *string) {
			setEnv(c, "gateway-2", "GATEWAY_STORE_DSN", "postgres://gateway:${GATEWAY_DB_PASSWORD:-local-only-x}@postgres:5432/other?search_path=webhookgw")
		}},
		{"a hard-coded token", func(c *composeFile, _ *string) {
			for _, r := range postgresReplicas {
				setEnv(c, r, "GATEWAY_ADMIN_TOKEN", "s3cr3t-t0ken")
			}
		}},
		{"a token default not marked local-only", func(c *composeFile, _ *string) {
			for _, r := range postgresReplicas {
				setEnv(c, r, "GATEWAY_INGEST_TOKEN", "${GATEWAY_INGEST_TOKEN:-s3cr3t}")
			}
		}},
		{"a hard-coded password in the DSN", func(c *composeFile, _ *string) {
			for _, r := range postgresReplicas {
				setEnv(c, r, "GATEWAY_STORE_DSN", "postgres://gateway:hunter2@postgres:5432/gateway?search_path=webhookgw")
			}
		}},
		{"a DSN without the schema", func(c *composeFile, _ *string) {
			for _, r := range postgresReplicas {
				setEnv(c, r, "GATEWAY_STORE_DSN", "postgres://gateway:${GATEWAY_DB_PASSWORD:-local-only-gateway-db-password}@postgres:5432/gateway")
			}
		}},
		{"a port published on every interface", func(c *composeFile, _ *string) {
			lb := c.Services["lb"]
			lb.Ports = []string{"8080:8080", "127.0.0.1:8404:8404"}
			c.Services["lb"] = lb
		}},
		{"a server missing", func(_ *composeFile, hap *string) {
			*hap = regexp.MustCompile(`(?m)^\s*server gateway-2 .*$`).ReplaceAllString(*hap, "")
		}},
		{"a server on the wrong port", func(_ *composeFile, hap *string) {
			*hap = strings.Replace(*hap, "gateway-2:8080", "gateway-2:9090", 1)
		}},
		{"a health check on /healthz", func(_ *composeFile, hap *string) {
			*hap = strings.Replace(*hap, "uri /readyz", "uri /healthz", 1)
		}},
		{"no health checks", func(_ *composeFile, hap *string) {
			*hap = strings.Replace(*hap, "default-server check ", "default-server ", 1)
		}},
		{"sticky balancing", func(_ *composeFile, hap *string) {
			*hap = strings.Replace(*hap, "balance roundrobin", "balance source", 1)
		}},
		{"the management API routed to one replica", func(_ *composeFile, hap *string) {
			*hap = strings.Replace(*hap, "    default_backend gateway_replicas",
				"    use_backend one if { path_beg /v1/webhooks }\n    default_backend gateway_replicas", 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := decodeCompose(t, postgresCompose)
			h := string(hap)
			tc.change(c, &h)
			if ps := composeProblems(t, c, h, string(initdb)); len(ps) == 0 {
				t.Error("no problem found")
			} else {
				t.Logf("found: %s", strings.Join(ps, "; "))
			}
		})
	}
}

// setEnv sets a variable in one service's environment, in a map of its own (the replicas share
// theirs through the compose file's anchor).
func setEnv(c *composeFile, service, key, value string) {
	s := c.Services[service]
	env := make(map[string]string, len(s.Environment))
	for k, v := range s.Environment {
		env[k] = v
	}
	env[key] = value
	s.Environment = env
	c.Services[service] = s
}

// composeProblems returns what is inconsistent in the postgres example: c, its compose file;
// hap, its haproxy.cfg; initdb, its database set-up script.
func composeProblems(t *testing.T, c *composeFile, hap, initdb string) []string {
	t.Helper()
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }

	names := make([]string, 0, len(c.Services))
	for name := range c.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	if !slices.Equal(names, postgresServices) {
		return []string{fmt.Sprintf("%s: services %v, want %v", postgresCompose, names, postgresServices)}
	}

	// The replicas: the repository's image, one definition.
	first := c.Services[postgresReplicas[0]]
	for _, name := range postgresReplicas {
		s := c.Services[name]
		if s.Build == nil || filepath.Clean(filepath.Join("postgres", s.Build.Context, s.Build.Dockerfile)) != filepath.Clean(dockerfile) {
			add("%s: must be built from the repository's Dockerfile (context ../.., dockerfile Dockerfile)", name)
		}
		if !reflect.DeepEqual(s, first) {
			add("%s differs from %s: the replicas must run the same image, configuration and environment", name, postgresReplicas[0])
		}
		if cond := s.DependsOn["postgres"]; cond != "service_healthy" {
			add("%s: depends_on postgres must have condition service_healthy, not %q", name, cond)
		}
		if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/usr/local/bin/gateway", "healthcheck"}) {
			add("%s: its healthcheck must run gateway healthcheck (GET /readyz)", name)
		}
		cfgPath := first.Environment["GATEWAY_CONFIG"]
		if !slices.Contains(s.Volumes, "./gateway.yaml:"+cfgPath+":ro") {
			add("%s: must mount ./gateway.yaml read-only at GATEWAY_CONFIG (%q)", name, cfgPath)
		}
	}
	for _, name := range postgresReplicas {
		if a, b := c.Services[name].Environment["GATEWAY_STORE_DSN"], first.Environment["GATEWAY_STORE_DSN"]; a != b {
			add("%s: GATEWAY_STORE_DSN %q, %s has %q: the replicas must share one database", name, a, postgresReplicas[0], b)
		}
	}

	// Each replica's configuration, as it would load it.
	env := replicaEnv(t, first)
	cfg, err := loadReplicaConfig(t, env)
	if err != nil {
		return append(ps, fmt.Sprintf("%s with %s's environment does not load:\n%v", postgresConfig, postgresReplicas[0], err))
	}
	if cfg.Store.Driver != "postgres" {
		add("%s: store.driver %q, want postgres", postgresConfig, cfg.Store.Driver)
	}
	if cfg.Store.DSN != env["GATEWAY_STORE_DSN"] {
		add("%s: store.dsn is %q, not the replicas' GATEWAY_STORE_DSN", postgresConfig, cfg.Store.DSN)
	}
	_, listenPort, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		add("%s: listen %q: %v", postgresConfig, cfg.Listen, err)
	}
	// Nothing secret in gateway.yaml: without the environment, the tokens are missing.
	if _, err := loadReplicaConfig(t, nil); err == nil ||
		!strings.Contains(err.Error(), "admin.tokens[0]") || !strings.Contains(err.Error(), "ingest.tokens[0]") {
		add("%s: its admin and ingest tokens must come from the environment, with no default (loaded without it: %v)", postgresConfig, err)
	}

	// The DSN names the database, role and schema the postgres service sets up.
	pg := c.Services["postgres"]
	if !strings.HasPrefix(pg.Image, "postgres:16") {
		add("postgres: image %q, want postgres:16", pg.Image)
	}
	if !slices.Contains(pg.Volumes, "./initdb:/docker-entrypoint-initdb.d:ro") {
		add("postgres: must mount ./initdb at /docker-entrypoint-initdb.d")
	}
	if pg.Healthcheck == nil {
		add("postgres: no healthcheck, which the replicas wait for")
	}
	role := regexp.MustCompile(`CREATE ROLE (\w+) LOGIN PASSWORD :'password'`).FindStringSubmatch(initdb)
	schema := regexp.MustCompile(`CREATE SCHEMA (\w+) AUTHORIZATION (\w+)`).FindStringSubmatch(initdb)
	if role == nil || schema == nil || schema[2] != role[1] || !strings.Contains(initdb, `password="$GATEWAY_DB_PASSWORD"`) {
		return append(ps, fmt.Sprintf("%s: must create a role with the password GATEWAY_DB_PASSWORD, and a schema it owns", postgresInitDB))
	}
	if u, err := url.Parse(cfg.Store.DSN); err != nil {
		add("the replicas' DSN: %v", err)
	} else {
		pw, _ := u.User.Password()
		pgEnv := make(map[string]string)
		for k, v := range pg.Environment {
			pgEnv[k] = interpolate(v, nil)
		}
		for _, check := range []struct{ what, got, want string }{
			{"scheme", u.Scheme, "postgres"},
			{"host", u.Host, "postgres:5432"}, // the service, on its port
			{"database", strings.TrimPrefix(u.Path, "/"), pgEnv["POSTGRES_DB"]},
			{"user", u.User.Username(), role[1]},
			{"password", pw, pgEnv["GATEWAY_DB_PASSWORD"]},
			{"search_path", u.Query().Get("search_path"), schema[1]},
		} {
			if check.got != check.want {
				add("the replicas' DSN: %s %q, want %q (what the postgres service sets up)", check.what, check.got, check.want)
			}
		}
		if !slices.Contains(pg.Expose, "5432") {
			add("postgres: must expose 5432 to the replicas")
		}
	}

	// The receiver: the declared subscription's URL and the one private range it may reach.
	if len(cfg.Subscriptions) != 1 || len(cfg.Security.AllowedCIDRs) != 1 {
		add("%s: want one subscription and one allowed CIDR", postgresConfig)
	} else {
		u, err := url.Parse(cfg.Subscriptions[0].URL)
		if err != nil || u.Hostname() != "receiver" || !slices.Contains(c.Services["receiver"].Expose, u.Port()) {
			add("%s: the subscription's URL %q must be the receiver service on a port it exposes", postgresConfig, cfg.Subscriptions[0].URL)
		}
		var subnets []string
		for _, n := range c.Networks {
			for _, ipam := range n.IPAM.Config {
				subnets = append(subnets, ipam.Subnet)
			}
		}
		if !slices.Equal(subnets, cfg.Security.AllowedCIDRs) {
			add("%s: security.allowed_cidrs %v must be the compose network's subnet %v", postgresConfig, cfg.Security.AllowedCIDRs, subnets)
		}
	}

	// Published ports: loopback only. The load balancer's are its frontends'.
	var lbPorts []string
	for name, s := range c.Services {
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if len(parts) != 3 || parts[0] != "127.0.0.1" {
				add("%s: port %q must be published on 127.0.0.1 only (127.0.0.1:HOST:CONTAINER)", name, p)
				continue
			}
			if name == "lb" {
				lbPorts = append(lbPorts, parts[2])
			}
		}
	}
	lb := c.Services["lb"]
	if !strings.HasPrefix(lb.Image, "haproxy:") || !slices.Contains(lb.Volumes, "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro") {
		add("lb: must be HAProxy with ./haproxy.cfg mounted at /usr/local/etc/haproxy/haproxy.cfg")
	}
	for _, r := range postgresReplicas {
		if _, ok := lb.DependsOn[r]; !ok {
			add("lb: must depend on %s", r)
		}
	}
	ps = append(ps, haproxyProblems(hap, postgresReplicas, listenPort, lbPorts)...)

	// Secrets: only references to variables, whose defaults are marked local-only.
	for name, s := range c.Services {
		for k, raw := range s.Environment {
			ps = append(ps, secretProblems(name+": "+k, k, raw)...)
		}
	}
	for _, line := range strings.Split(hap, "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "userlist" || len(f) > 1 && f[0] == "stats" && f[1] == "auth") {
			add("%s: %q: no credentials in the load balancer's configuration", postgresHAProxy, line)
		}
	}
	return ps
}

// secretVar names a variable that holds a secret.
var secretVar = regexp.MustCompile(`(?i)(TOKEN|PASSWORD|SECRET|KEY)$`)

// secretProblems checks one environment entry, as written: a secret's value is one ${VAR…}
// reference whose default is empty or starts with "local-only-", and a URL's password is too.
func secretProblems(where, key, raw string) []string {
	var ps []string
	checkRef := func(what, s string) {
		m := composeVar.FindStringSubmatch(s)
		switch {
		case m == nil || m[0] != s:
			ps = append(ps, fmt.Sprintf("%s: %s %q must be a ${VAR} reference, not a value written out", where, what, s))
		case m[3] != "" && !strings.HasPrefix(m[3], "local-only-"):
			ps = append(ps, fmt.Sprintf("%s: %s's default %q must start with local-only-, to mark it as one", where, what, m[3]))
		}
	}
	if secretVar.MatchString(key) {
		checkRef("the value", raw)
	}
	// A URL's password: what is between the scheme's "//", the user's ":" and the host's "@".
	if m := regexp.MustCompile(`^\w+://[^:/@]+:(.+)@[^@]+$`).FindStringSubmatch(raw); m != nil {
		checkRef("the password", m[1])
	}
	return ps
}

// haproxyLine is one directive of an haproxy.cfg section.
type haproxyLine struct {
	line   int
	fields []string
}

// haproxySections reads an haproxy.cfg into its sections ("frontend gateway", "global", …), each
// a list of its directives, with comments and blank lines left out.
func haproxySections(text string) map[string][]haproxyLine {
	sections := make(map[string][]haproxyLine)
	current := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "global", "defaults", "frontend", "backend", "listen", "resolvers", "userlist", "peers", "cache", "program":
			current = strings.Join(f, " ")
			sections[current] = nil
			continue
		}
		sections[current] = append(sections[current], haproxyLine{line: n, fields: f})
	}
	return sections
}

// haproxyProblems checks the load balancer's configuration: a frontend on one of the published
// ports sends everything to a backend that balances round robin over exactly the replicas, on
// their listen port, each checked with GET /readyz.
func haproxyProblems(text string, replicas []string, port string, published []string) []string {
	var ps []string
	add := func(format string, args ...any) {
		ps = append(ps, fmt.Sprintf(postgresHAProxy+": "+format, args...))
	}
	sections := haproxySections(text)
	if _, ok := sections[""]; ok {
		add("directives before the first section")
	}
	backend := ""
	for name, lines := range sections {
		if !strings.HasPrefix(name, "frontend ") {
			continue
		}
		var binds, defaults []string
		for _, l := range lines {
			switch l.fields[0] {
			case "bind":
				if len(l.fields) > 1 {
					if _, p, err := net.SplitHostPort(l.fields[1]); err == nil {
						binds = append(binds, p)
					}
				}
			case "default_backend":
				defaults = append(defaults, l.fields[1:]...)
			case "use_backend":
				add("line %d: %s routes some requests elsewhere: ingest and the management API both go to every replica", l.line, name)
			}
		}
		for _, b := range binds {
			if !slices.Contains(published, b) {
				add("%s binds port %s, which the lb service does not publish (%v)", name, b, published)
			}
		}
		if len(defaults) == 1 {
			if backend != "" {
				add("more than one frontend forwards to a backend")
			}
			backend = defaults[0]
		}
	}
	lines, ok := sections["backend "+backend]
	if backend == "" || !ok {
		add("no frontend forwards to a backend that exists (default_backend)")
		return ps
	}
	var (
		balance, check          string
		httpchk, expect200      bool
		defaultCheck            bool
		servers                 []string
		serverLines             = make(map[string]haproxyLine)
		checkedServers, targets = make(map[string]bool), make(map[string]string)
	)
	for _, l := range lines {
		f := l.fields
		switch {
		case f[0] == "balance" && len(f) > 1:
			balance = f[1]
		case f[0] == "option" && len(f) > 1 && f[1] == "httpchk":
			httpchk = true
			if len(f) > 3 { // option httpchk GET /readyz
				check = f[2] + " " + f[3]
			}
		case f[0] == "http-check" && len(f) > 1 && f[1] == "send":
			var meth, uri string
			for i := 2; i+1 < len(f); i += 2 {
				switch f[i] {
				case "meth":
					meth = f[i+1]
				case "uri":
					uri = f[i+1]
				}
			}
			check = meth + " " + uri
		case f[0] == "http-check" && slices.Equal(f[1:], []string{"expect", "status", "200"}):
			expect200 = true
		case f[0] == "default-server":
			defaultCheck = slices.Contains(f[1:], "check")
		case f[0] == "server" && len(f) > 2:
			servers = append(servers, f[1])
			serverLines[f[1]] = l
			targets[f[1]] = f[2]
			checkedServers[f[1]] = slices.Contains(f[3:], "check")
		}
	}
	if balance != "roundrobin" {
		add("backend %s: balance %q, want roundrobin", backend, balance)
	}
	if !httpchk || check != "GET /readyz" {
		add("backend %s: the health check must be GET /readyz (option httpchk; http-check send meth GET uri /readyz), not %q", backend, check)
	}
	if !expect200 {
		add("backend %s: the health check must expect status 200 (http-check expect status 200)", backend)
	}
	slices.Sort(servers)
	if !slices.Equal(servers, replicas) {
		add("backend %s: servers %v, want the replicas %v", backend, servers, replicas)
	}
	for _, s := range servers {
		want := net.JoinHostPort(s, port)
		if targets[s] != want {
			add("line %d: server %s sends to %s, want %s (the replica's service name and listen port)", serverLines[s].line, s, targets[s], want)
		}
		if !checkedServers[s] && !defaultCheck {
			add("line %d: server %s is not health-checked (check, on its line or on default-server)", serverLines[s].line, s)
		}
	}
	return ps
}

// TestPostgresExampleHAProxyParses runs haproxy -c on the example's haproxy.cfg, when an haproxy
// binary is on the PATH. The replicas' names do not resolve outside compose: the warnings about
// them are expected (init-addr none lets HAProxy start all the same); any other fails the test.
func TestPostgresExampleHAProxyParses(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("no haproxy on the PATH; TestPostgresExampleCompose checks the file's structure")
	}
	out, err := exec.Command(haproxy, "-c", "-f", postgresHAProxy).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c -f %s: %v\n%s", postgresHAProxy, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "[WARNING]") && !strings.Contains(line, "could not resolve address") {
			t.Errorf("haproxy -c: %s", line)
		}
	}
	t.Logf("haproxy -c -f %s:\n%s", postgresHAProxy, out)
}
