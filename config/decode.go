package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a configuration, at a YAML path such as
// "subscriptions[2].url".
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems is every problem found in a configuration. Load and Validate return it as their
// error; its Error method prints one problem a line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Prefix returns the problems with path put before each of their paths.
func (ps Problems) Prefix(path string) Problems {
	out := make(Problems, len(ps))
	for i, p := range ps {
		out[i] = Problem{Path: joinPath(path, p.Path), Message: p.Message}
	}
	return out
}

// Add appends a problem at path.
func (ps *Problems) Add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func joinPath(base, rest string) string {
	switch {
	case base == "":
		return rest
	case rest == "":
		return base
	case strings.HasPrefix(rest, "["):
		return base + rest
	}
	return base + "." + rest
}

// DecodeStrict decodes node into out, which must be a non-nil pointer. Unlike yaml.Node.Decode
// it refuses keys that out has no field for, and it keeps going after a problem so that every
// one is reported, each with its path relative to node. Values already in out are kept where
// node leaves them out (or sets them to null), so out can hold defaults. A yaml.Node field
// takes its node as it is, for a plugin to decode later.
func DecodeStrict(node *yaml.Node, out any) error {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("config: DecodeStrict needs a non-nil pointer, not %T", out)
	}
	var ps Problems
	decodeValue(node, v.Elem(), "", &ps)
	if len(ps) > 0 {
		return ps
	}
	return nil
}

var (
	nodeType        = reflect.TypeOf(yaml.Node{})
	durationType    = reflect.TypeOf(time.Duration(0))
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

func decodeValue(n *yaml.Node, v reflect.Value, path string, ps *Problems) {
	for n != nil && (n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode) {
		if n.Kind == yaml.DocumentNode {
			if len(n.Content) == 0 {
				return
			}
			n = n.Content[0]
		} else {
			n = n.Alias
		}
	}
	if n == nil || n.Kind == 0 { // nothing given: keep what v holds
		return
	}
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // null leaves the default in place
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			ps.Add(path, "%s", cleanYAMLError(err))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		// A pointer is set only to a value that decoded: a wrong value leaves it as it was,
		// so that it is reported once, not again by Validate as the zero value.
		elem := reflect.New(v.Type().Elem())
		if !v.IsNil() {
			elem.Elem().Set(v.Elem())
		}
		before := len(*ps)
		decodeValue(n, elem.Elem(), path, ps)
		if len(*ps) == before {
			v.Set(elem)
		}
	case reflect.Struct:
		decodeStruct(n, v, path, ps)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			ps.Add(path, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			decodeValue(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), ps)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			ps.Add(path, "must be a mapping")
			return
		}
		if v.Type().Key().Kind() != reflect.String {
			ps.Add(path, "config: maps need string keys")
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if m.MapIndex(reflect.ValueOf(key).Convert(v.Type().Key())).IsValid() {
				ps.Add(joinPath(path, key), "key appears twice")
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			decodeValue(n.Content[i+1], elem, joinPath(path, key), ps)
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem)
		}
		v.Set(m)
	default:
		if n.Kind != yaml.ScalarNode {
			ps.Add(path, "must be %s", describeKind(v.Type()))
			return
		}
		if isInt(v.Kind()) && n.ShortTag() == "!!float" {
			// yaml.v3 would drop the fraction: 1.5 would be 1.
			ps.Add(path, "must be %s, not %q", describeKind(v.Type()), n.Value)
			return
		}
		target := reflect.New(v.Type())
		if err := n.Decode(target.Interface()); err != nil {
			if v.Kind() == reflect.String {
				// Strings hold secrets: never repeat the value (only an odd tag gets here).
				ps.Add(path, "must be a string (not a %s)", strings.TrimPrefix(n.ShortTag(), "!!"))
				return
			}
			ps.Add(path, "must be %s, not %q", describeKind(v.Type()), n.Value)
			return
		}
		v.Set(target.Elem())
	}
}

func decodeStruct(n *yaml.Node, v reflect.Value, path string, ps *Problems) {
	if n.Kind != yaml.MappingNode {
		ps.Add(path, "must be a mapping")
		return
	}
	fields := yamlFields(v.Type())
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		if seen[key] {
			ps.Add(joinPath(path, key), "key appears twice")
			continue
		}
		seen[key] = true
		idx, ok := fields[key]
		if !ok {
			ps.Add(joinPath(path, shownKey(key)), "unknown key (known keys: %s)", strings.Join(sortedKeys(fields), ", "))
			continue
		}
		decodeValue(n.Content[i+1], v.FieldByIndex(idx), joinPath(path, key), ps)
	}
}

// yamlFields maps the YAML names of t's fields to their indexes, following the yaml tag
// (inline structs included) as yaml.v3 does.
func yamlFields(t reflect.Type) map[string][]int {
	fields := make(map[string][]int)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
			for k, idx := range yamlFields(f.Type) {
				fields[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = []int{i}
	}
	return fields
}

// shownKey is a key as a problem may show it: a key with a space in it, or a long one, is
// likely a value that lost its colon ("secret whsec_…"), so only its first word is shown.
func shownKey(key string) string {
	if i := strings.IndexAny(key, " \t\n"); i >= 0 {
		return key[:i] + "…"
	}
	if len(key) > 40 {
		return key[:16] + "…"
	}
	return key
}

func sortedKeys(m map[string][]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isInt(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func describeKind(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 15s, 5m or 2h"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// cleanYAMLError drops yaml.v3's "yaml: unmarshal errors:" wrapping and line prefixes: the
// path already says where.
func cleanYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(msg)
	if strings.HasPrefix(msg, "line ") {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			msg = rest
		}
	}
	return msg
}
