package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/plugins/builtin"
)

func node(t *testing.T, text string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(text), &n); err != nil {
		t.Fatal(err)
	}
	return &n
}

type nop struct{}

func (nop) Apply(context.Context, *http.Request, []byte) error { return nil }

func TestRegistry(t *testing.T) {
	r := plugins.NewRegistry()
	r.Register("b", func(*yaml.Node) (plugins.Plugin, error) { return nop{}, nil })
	r.Register("a", func(*yaml.Node) (plugins.Plugin, error) { return nop{}, nil })
	if got := fmt.Sprint(r.Names()); got != "[a b]" {
		t.Fatalf("Names() = %s, want sorted", got)
	}
	if _, err := r.New("c", nil); err == nil || !strings.Contains(err.Error(), "[a b]") {
		t.Fatalf("unknown plugin: %v", err)
	}
	for name, f := range map[string]plugins.Factory{"a": func(*yaml.Node) (plugins.Plugin, error) { return nop{}, nil }, "nil": nil} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", name)
				}
			}()
			r.Register(name, f)
		}()
	}
	// Registries are values: a second one does not see the first's plugins.
	if len(plugins.NewRegistry().Names()) != 0 {
		t.Fatal("a new Registry is not empty")
	}
}

// TestBuiltinsOnTheWire applies each plugin to a real request and checks what a server receives,
// applying twice as a retry does: Set, never Add.
func TestBuiltinsOnTheWire(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer srv.Close()
	reg := builtin.Registry()
	cases := []struct {
		name, config string
		check        func(h http.Header) error
	}{
		{"basic-auth", "{username: jroll, password: '1234'}", func(h http.Header) error {
			req := &http.Request{Header: h}
			u, p, ok := req.BasicAuth()
			if !ok || u != "jroll" || p != "1234" || len(h.Values("Authorization")) != 1 {
				return fmt.Errorf("Authorization %q", h.Values("Authorization"))
			}
			return nil
		}},
		{"bearer", "{token: t0k}", func(h http.Header) error {
			if v := h.Values("Authorization"); len(v) != 1 || v[0] != "Bearer t0k" {
				return fmt.Errorf("Authorization %q", v)
			}
			return nil
		}},
		{"headers", "{X-Team: billing, x-lower: v}", func(h http.Header) error {
			if h.Get("X-Team") != "billing" || len(h.Values("X-Lower")) != 1 {
				return fmt.Errorf("headers %v", h)
			}
			return nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := reg.New(c.name, node(t, c.config))
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("{}"))
			for i := 0; i < 2; i++ {
				if err := p.Apply(context.Background(), req, []byte("{}")); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if err := c.check(got); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBuiltinConfigsAreStrict(t *testing.T) {
	reg := builtin.Registry()
	cases := []struct{ name, config, path string }{
		{"basic-auth", "{username: u, pasword: p}", "pasword"},
		{"basic-auth", "{password: p}", "username"},
		{"basic-auth", "{username: 'a:b'}", "username"},
		{"basic-auth", "[u, p]", ""},
		{"bearer", "{}", "token"},
		{"bearer", "{token: t, extra: 1}", "extra"},
		{"bearer", "{token: \"a\\nb\"}", "token"},
		{"headers", "{Webhook-Signature: x}", "Webhook-Signature"},
		{"headers", "{X: [1]}", "X"},
		{"headers", "{'Bad Name': x}", "Bad Name"},
	}
	for _, c := range cases {
		_, err := reg.Check(c.name, node(t, c.config))
		var ps config.Problems
		if !errors.As(err, &ps) || ps[0].Path != c.path {
			t.Errorf("%s %s: got %v, want a problem at %q", c.name, c.config, err, c.path)
		}
	}
	// No config at all is a clear problem, not a panic.
	if _, err := reg.Check("bearer", nil); err == nil {
		t.Error("bearer without config accepted")
	}
}
