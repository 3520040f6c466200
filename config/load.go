package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Environment variables read by Load.
const (
	EnvConfig = "GATEWAY_CONFIG" // the config file, when --config is not given
	EnvListen = "GATEWAY_LISTEN" // overrides listen

	EnvAdminListen = "GATEWAY_ADMIN_LISTEN" // overrides admin.listen
)

// PluginChecker checks a plugin's name and configuration. A *plugins.Registry is one. It
// returns the URLs the plugin sends requests to of its own (an oauth2 token_url), which must
// pass the same rules as delivery targets.
type PluginChecker interface {
	Check(name string, cfg *yaml.Node) (urls []string, err error)
}

// Load reads the file at path and returns its configuration, checked with Validate. The error
// is a Problems value when the file was read but is wrong; any other error means it could not
// be read.
func Load(path string, plugins PluginChecker) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, os.LookupEnv, plugins)
}

// Parse decodes and validates a configuration, expanding ${VAR} and ${VAR:-default} with
// lookup. GATEWAY_LISTEN and GATEWAY_ADMIN_LISTEN, when lookup finds them, override listen
// and admin.listen.
func Parse(data []byte, lookup func(string) (string, bool), plugins PluginChecker) (*Config, error) {
	cfg := Default()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, errEOF) {
		return nil, Problems{{Message: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var ps Problems
	expandNode(&doc, "", lookup, &ps)
	if err := DecodeStrict(&doc, cfg); err != nil {
		ps = append(ps, err.(Problems)...)
	}
	if v, ok := lookup(EnvListen); ok && v != "" {
		cfg.Listen = v
	}
	if v, ok := lookup(EnvAdminListen); ok && v != "" {
		cfg.Admin.Listen = v
	}
	cfg.normalize()
	if err := cfg.Validate(plugins); err != nil {
		ps = append(ps, err.(Problems)...)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return cfg, nil
}

// errEOF is what yaml.v3 returns for an empty document.
var errEOF = func() error {
	var n yaml.Node
	return yaml.NewDecoder(bytes.NewReader(nil)).Decode(&n)
}()

// normalize drops empty tokens, which an unset ${VAR} leaves behind.
func (c *Config) normalize() {
	c.Admin.Tokens = nonEmpty(c.Admin.Tokens)
	c.Ingest.Tokens = nonEmpty(c.Ingest.Tokens)
}

func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// expandNode expands the environment in every scalar value below n (not in keys).
func expandNode(n *yaml.Node, path string, lookup func(string) (string, bool), ps *Problems) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.SequenceNode {
				p = fmt.Sprintf("%s[%d]", path, i)
			}
			expandNode(c, p, lookup, ps)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandNode(n.Content[i+1], joinPath(path, n.Content[i].Value), lookup, ps)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		v, err := Expand(n.Value, lookup)
		if err != nil {
			ps.Add(path, "%v", err)
			return
		}
		if v != n.Value {
			n.Value = v
			if v == "" {
				// An unset variable is an empty string, not YAML's null (which would keep the
				// default in place): dsn: ${UNSET} must fail as dsn: "" does.
				n.Tag = "!!str"
			} else {
				// Let the expanded text say its type, quoted or not, so that
				// max_body_bytes: "${MAX}" is a number. A string field takes any scalar's text.
				n.Tag, n.Style = "", 0
			}
		}
	}
}

// Expand replaces ${VAR} with the value of VAR and ${VAR:-default} with the value of VAR, or
// default when VAR is unset or empty. "$${" stands for a literal "${". Any other "$" is kept.
func Expand(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "$")
		if i < 0 || i == len(s)-1 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			b.WriteString("${")
			s = s[3:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			name, def, hasDef := strings.Cut(s[2:end], ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("bad variable name %q in ${...}", name)
			}
			val, ok := lookup(name)
			if hasDef && (!ok || val == "") {
				val = def
			}
			b.WriteString(val)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
	}
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
