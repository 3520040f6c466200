package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
)

// FuzzParse feeds arbitrary files to the loader: it must never panic, and what it accepts must
// validate again. The seed corpus is every YAML file in the repository's config and examples
// plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"../gateway.yaml", "testdata/*.yaml", "../examples/*/gateway.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	reg := builtin.Registry()
	lookup := func(k string) (string, bool) { return "v-" + k, k != "UNSET" }
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, lookup, reg)
		if err != nil {
			if _, ok := err.(config.Problems); !ok {
				t.Fatalf("Parse returned %T, not Problems: %v", err, err)
			}
			return
		}
		if err := cfg.Validate(reg); err != nil {
			t.Fatalf("accepted a config that does not validate: %v", err)
		}
	})
}

// FuzzExpand checks that expansion never panics and leaves text without "$" alone.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{"${A}", "${A:-b}", "$${A}", "x$", "${", "${A", "plain", "${A:-${B}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := config.Expand(s, func(string) (string, bool) { return "", false })
		if err == nil && !containsDollar(s) && out != s {
			t.Fatalf("Expand(%q) = %q", s, out)
		}
	})
}

// FuzzCheckURL checks that URL validation never panics and never accepts a non-https URL or
// a host outside the allowlist.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://example.com", "http://x", "https://a.partner.example:8443/p?q", "https://u@h", "//x", "https://[::1]/"} {
		f.Add(s)
	}
	sec := config.Security{RequireHTTPS: true, AllowedHosts: []string{"*.partner.example"}}
	f.Fuzz(func(t *testing.T, raw string) {
		if sec.CheckURL(raw) != nil {
			return
		}
		if len(raw) < 8 || !equalFold(raw[:8], "https://") {
			t.Fatalf("accepted %q", raw)
		}
	})
}

func containsDollar(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '$' {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}
