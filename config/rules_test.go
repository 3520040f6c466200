package config_test

import (
	"strings"
	"testing"

	"github.com/webhookgw/gateway/config"
)

func TestCheckURL(t *testing.T) {
	strict := config.Security{RequireHTTPS: true}
	relaxed := config.Security{}
	allow := config.Security{RequireHTTPS: true, AllowedHosts: []string{"hooks.example.com", "*.partner.example"}}
	cases := []struct {
		sec  config.Security
		url  string
		want string // "" = accepted; else a part of the message
	}{
		{strict, "https://example.com", ""},
		{strict, "https://example.com:8443/a/b?c=d", ""},
		{strict, "HTTPS://example.com", ""},
		{strict, "http://example.com", "must start with https://"},
		{relaxed, "http://example.com", ""},
		{relaxed, "ftp://example.com", "https:// or http://"},
		{strict, "", "must not be empty"},
		{strict, "example.com", "must start with https://"},
		{strict, "https://", "must name a host"},
		{strict, "https:example.com", "must name a host"},
		{strict, "https://:443", "must name a host"},
		{strict, "https://u:p@example.com", "credentials"},
		{strict, "https://example.com:0", "port"},
		{strict, "https://example.com:99999", "port"},
		{strict, "https://exa mple.com", "not a valid URL"},
		{strict, "https://" + strings.Repeat("a", 2050), "at most 2048"},
		{allow, "https://hooks.example.com/x", ""},
		{allow, "https://HOOKS.example.com./x", ""},
		{allow, "https://a.b.partner.example", ""},
		{allow, "https://partner.example", "not in security.allowed_hosts"},
		{allow, "https://evil.example.com", "not in security.allowed_hosts"},
		{allow, "https://hooks.example.com.evil.test", "not in security.allowed_hosts"},
		{allow, "https://xpartner.example", "not in security.allowed_hosts"},
	}
	for _, c := range cases {
		err := c.sec.CheckURL(c.url)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("CheckURL(%q): %v", c.url, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("CheckURL(%q) = %v, want an error with %q", c.url, err, c.want)
		}
	}
}

func TestCheckHeader(t *testing.T) {
	for _, ok := range [][2]string{{"X-Team", "billing"}, {"My-Custom-Header", "Example"}, {"X-Empty", ""}} {
		if err := config.CheckHeader(ok[0], ok[1]); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][2]string{{"Bad Name", "v"}, {"", "v"}, {"X", "a\r\nInjected: 1"}, {"X", "nul\x00"},
		{"webhook-signature", "v"}, {"content-length", "1"}, {"Host", "h"}, {"traceparent", "x"}} {
		if err := config.CheckHeader(bad[0], bad[1]); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
