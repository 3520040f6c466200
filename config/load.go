package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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
	return ParseSource(data, Source{Env: lookup}, plugins)
}

// ParseSource is Parse with the files of ${file:PATH} and VAR_FILE read through src too, as a
// test that checks a configuration meant for another machine (a pod's mounted secrets) does.
func ParseSource(data []byte, src Source, plugins PluginChecker) (*Config, error) {
	lookup := src.Env
	cfg := Default()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, errEOF) {
		return nil, Problems{{Message: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var ps Problems
	written := make(map[string]string) // the text as written of each value that was expanded
	expandNode(&doc, "", src, &ps, written)
	if err := DecodeStrict(&doc, cfg); err != nil {
		ps = append(ps, err.(Problems)...)
	}
	checkTokens("admin.tokens", cfg.Admin.Tokens, written, lookup, "to have serve make a token for each run", &ps)
	checkTokens("ingest.tokens", cfg.Ingest.Tokens, written, lookup, "to take events without a token", &ps)
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

// normalize drops empty tokens, which an unset ${VAR} leaves behind (checkTokens has refused
// a list left with none).
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

// checkTokens reports a token list that has entries as written but none once expanded, one
// problem an entry, naming its variables: an unset ${VAR} must never open ingest, or have
// admin tokens made up in its place. "No token" is said with an empty list (key: []); an entry
// whose every variable has a default, as ${VAR:-} has, may expand to nothing on purpose. An
// empty entry beside others that are not is dropped, as before (normalize). hint says what
// the empty list does. A list that did not decode has been reported already and is skipped.
func checkTokens(key string, tokens []string, written map[string]string, lookup func(string) (string, bool), hint string, ps *Problems) {
	for _, p := range *ps {
		if p.Path == key || strings.HasPrefix(p.Path, key+"[") {
			return
		}
	}
	if len(tokens) == 0 {
		return
	}
	var found Problems
	for i, t := range tokens {
		if strings.TrimSpace(t) != "" {
			return
		}
		path := fmt.Sprintf("%s[%d]", key, i)
		text, expanded := written[path]
		if !expanded {
			found.Add(path, "must not be empty; write %s: [] %s", key, hint)
			continue
		}
		var why []string
		for _, r := range references(text) {
			if r.hasDefault {
				continue
			}
			if _, set := lookup(r.name); set {
				why = append(why, "${"+r.name+"} is empty")
			} else {
				why = append(why, "${"+r.name+"} is not set")
			}
		}
		switch len(why) {
		case 0: // every variable has a default: empty on purpose
		case 1:
			found.Add(path, "%s; set it, or write %s: [] %s", why[0], key, hint)
		default:
			found.Add(path, "%s; set them, or write %s: [] %s", strings.Join(why, " and "), key, hint)
		}
	}
	*ps = append(*ps, found...)
}

// reference is a ${VAR} or ${VAR:-default} in a value.
type reference struct {
	name       string
	hasDefault bool
}

// references returns the variables s refers to, as Expand reads them.
func references(s string) []reference {
	var refs []reference
	for {
		i := strings.Index(s, "$")
		if i < 0 {
			return refs
		}
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			s = s[3:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return refs
			}
			name, _, hasDef := strings.Cut(s[2:end], ":-")
			refs = append(refs, reference{name: name, hasDefault: hasDef})
			s = s[end+1:]
		default:
			s = s[1:]
		}
	}
}

// expandNode expands the environment in every scalar value below n (not in keys), and notes in
// written the text, as written, of each value it changed.
func expandNode(n *yaml.Node, path string, src Source, ps *Problems, written map[string]string) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.SequenceNode {
				p = fmt.Sprintf("%s[%d]", path, i)
			}
			expandNode(c, p, src, ps, written)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandNode(n.Content[i+1], joinPath(path, n.Content[i].Value), src, ps, written)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		v, err := src.Expand(n.Value)
		if err != nil {
			ps.Add(path, "%v", err)
			return
		}
		if v != n.Value {
			written[path] = n.Value
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
// Secrets may come from files, the Kubernetes and Docker way: ${file:PATH} is the content of
// the file at PATH, and when VAR is unset or empty but VAR_FILE is set, ${VAR} is the content
// of the file VAR_FILE names (in both, one trailing newline is dropped). Files are read with
// ReadSecretFile.
func Expand(s string, lookup func(string) (string, bool)) (string, error) {
	return Source{Env: lookup}.Expand(s)
}

// Source is where ${...} references find their values.
type Source struct {
	// Env looks up an environment variable, as os.LookupEnv does.
	Env func(name string) (string, bool)
	// ReadFile reads the file of a ${file:PATH} reference or a VAR_FILE variable; nil is
	// ReadSecretFile.
	ReadFile func(path string) ([]byte, error)
}

// Expand expands s as the package's Expand does, with src's environment and files. Its errors
// name the variable or the file, never a value read.
func (src Source) Expand(s string) (string, error) {
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
			val, err := src.value(s[2:end])
			if err != nil {
				return "", err
			}
			b.WriteString(val)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
	}
}

// value is what the reference ref (the text between "${" and "}") stands for.
func (src Source) value(ref string) (string, error) {
	if path, ok := strings.CutPrefix(ref, "file:"); ok {
		if path == "" {
			return "", errors.New("${file:} names no file")
		}
		val, err := src.readFile(path)
		if err != nil {
			return "", fmt.Errorf("${file:%s}: %w", path, err)
		}
		return val, nil
	}
	name, def, hasDef := strings.Cut(ref, ":-")
	if !validEnvName(name) {
		return "", fmt.Errorf("bad variable name %q in ${...}", name)
	}
	val, _ := src.Env(name)
	if path, ok := src.Env(name + "_FILE"); val == "" && ok && path != "" {
		v, err := src.readFile(path)
		if err != nil {
			return "", fmt.Errorf("${%s}: %s is unset or empty, and %s_FILE names a file that cannot be read: %w", name, name, name, err)
		}
		val = v
	}
	if hasDef && val == "" {
		val = def
	}
	return val, nil
}

// readFile returns the content of the file at path without its one trailing newline.
func (src Source) readFile(path string) (string, error) {
	read := src.ReadFile
	if read == nil {
		read = ReadSecretFile
	}
	b, err := read(path)
	if err != nil {
		return "", err
	}
	s := string(b)
	if t, ok := strings.CutSuffix(s, "\n"); ok {
		s = strings.TrimSuffix(t, "\r")
	}
	return s, nil
}

// MaxSecretFile is the largest file a ${file:PATH} reference or a VAR_FILE variable may name.
const MaxSecretFile = 1 << 20

// ReadSecretFile reads the file at path for a ${file:PATH} reference or a VAR_FILE variable.
// It reads regular files only (a symbolic link to one, as Kubernetes mounts secrets, is
// fine), of at most MaxSecretFile bytes; a relative path is relative to the working directory.
// Its errors name the path.
func ReadSecretFile(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > MaxSecretFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxSecretFile)
	}
	return b, nil
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
