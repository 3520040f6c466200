package gateway

import (
	"runtime/debug"
	"testing"
)

func TestResolveVersion(t *testing.T) {
	info := func(v string, ok bool) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			if !ok {
				return nil, false
			}
			return &debug.BuildInfo{Main: debug.Module{Path: "github.com/webhookgw/gateway", Version: v}}, true
		}
	}
	cases := []struct {
		set  string
		info func() (*debug.BuildInfo, bool)
		want string
	}{
		{"v1.2.3", info("v0.9.0", true), "v1.2.3"}, // -ldflags -X wins
		{"dev", info("v0.9.0", true), "v0.9.0"},    // go install …@v0.9.0
		{"dev", info("v0.0.0-20260101120000-0123456789ab+dirty", true), "v0.0.0-20260101120000-0123456789ab+dirty"},
		{"dev", info("(devel)", true), "dev"},
		{"dev", info("", true), "dev"},
		{"dev", info("", false), "dev"},
	}
	for i, c := range cases {
		if got := resolveVersion(c.set, c.info); got != c.want {
			t.Errorf("case %d: resolveVersion(%q, …) = %q, want %q", i, c.set, got, c.want)
		}
	}
}
