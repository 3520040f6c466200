package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckAddrBlocksEveryRange(t *testing.T) {
	var sec Security
	cases := map[string]string{ // address -> part of the reason; "" = allowed
		"0.0.0.0":               "unspecified",
		"0.1.2.3":               "unspecified",
		"10.0.0.1":              "private",
		"10.255.255.255":        "private",
		"100.64.0.1":            "CGNAT",
		"100.127.255.254":       "CGNAT",
		"127.0.0.1":             "loopback",
		"127.255.0.9":           "loopback",
		"169.254.169.254":       "link-local",
		"172.16.0.1":            "private",
		"172.31.255.255":        "private",
		"192.0.0.8":             "IETF",
		"192.0.2.1":             "documentation",
		"192.88.99.1":           "6to4 relay",
		"192.168.1.1":           "private",
		"198.18.0.1":            "benchmarking",
		"198.51.100.7":          "documentation",
		"203.0.113.9":           "documentation",
		"224.0.0.1":             "multicast",
		"239.255.255.250":       "multicast",
		"240.0.0.1":             "reserved",
		"255.255.255.255":       "reserved",
		"::":                    "unspecified",
		"::1":                   "loopback",
		"::ffff:127.0.0.1":      "loopback", // IPv4-mapped: judged as the IPv4 address
		"::ffff:10.0.0.1":       "private",
		"::127.0.0.1":           "IPv4-compatible",
		"64:ff9b::7f00:1":       "NAT64",
		"64:ff9b::808:808":      "NAT64",
		"64:ff9b:1::1":          "NAT64",
		"100::1":                "discard",
		"2001:0:4136:e378::1":   "Teredo",
		"2001:db8::1":           "documentation",
		"2002:7f00:1::1":        "6to4",
		"fc00::1":               "unique local",
		"fd12:3456::1":          "unique local",
		"fe80::1":               "link-local",
		"fe80::1%eth0":          "link-local",
		"ff02::1":               "multicast",
		"8.8.8.8":               "",
		"93.184.216.34":         "",
		"100.63.255.255":        "",
		"172.32.0.1":            "",
		"2606:4700:4700::1111":  "",
		"::ffff:93.184.216.34":  "",
		"2a00:1450:4001:81b::e": "",
	}
	for addr, want := range cases {
		err := sec.CheckAddr(netip.MustParseAddr(addr))
		switch {
		case want == "" && err != nil:
			t.Errorf("%s blocked: %v", addr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "blocked: ")):
			t.Errorf("%s: %v, want blocked as %q", addr, err, want)
		}
	}
	if err := sec.CheckAddr(netip.MustParseAddr("127.0.0.1")); err.Error() != "blocked: 127.0.0.1 is a loopback address" {
		t.Errorf("message %q", err)
	}
	open := Security{AllowPrivateNetworks: true}
	for addr := range cases {
		if err := open.CheckAddr(netip.MustParseAddr(addr)); err != nil {
			t.Errorf("allow_private_networks: %s blocked: %v", addr, err)
		}
	}
	sidecar := Security{AllowedCIDRs: []string{"10.1.0.0/16", "fd00:1::/32"}}
	for addr, allowed := range map[string]bool{"10.1.2.3": true, "10.2.0.1": false, "::ffff:10.1.0.9": true, "fd00:1::5": true, "fd00:2::5": false, "127.0.0.1": false} {
		if err := sidecar.CheckAddr(netip.MustParseAddr(addr)); (err == nil) != allowed {
			t.Errorf("allowed_cidrs: %s: %v", addr, err)
		}
	}
}

func TestCheckURLRefusesPrivateLiterals(t *testing.T) {
	sec := Security{RequireHTTPS: true}
	blocked := []string{
		"https://127.0.0.1/", "https://127.1/", "https://2130706433/", "https://0x7f000001/",
		"https://0x7f.1/", "https://017700000001/", "https://0177.0.0.1/", "https://[::1]/",
		"https://[::ffff:127.0.0.1]/", "https://[::ffff:7f00:1]/", "https://[64:ff9b::7f00:1]/",
		"https://[2002:7f00:1::1]/", "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
		"https://169.254.169.254/latest/meta-data/", "https://[fe80::1%25eth0]/",
		"https://localhost:8443/", "https://api.localhost/", "https://10.0.0.5/", "https://0.0.0.0/",
		"https://[::]/", "https://0/", "https://0x08080808/", // a non-standard form, even when public
	}
	for _, u := range blocked {
		if err := sec.CheckURL(u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	for _, u := range []string{"https://8.8.8.8/", "https://[2606:4700:4700::1111]/", "https://example.com/", "https://10.example.com/"} {
		if err := sec.CheckURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if err := (Security{RequireHTTPS: true, AllowedCIDRs: []string{"10.1.0.0/16"}}).CheckURL("https://10.1.0.7/hooks"); err != nil {
		t.Errorf("allowed_cidrs at registration: %v", err)
	}
}

func TestParseInetAton(t *testing.T) {
	for in, want := range map[string]string{
		"2130706433": "127.0.0.1", "0x7f000001": "127.0.0.1", "017700000001": "127.0.0.1",
		"127.1": "127.0.0.1", "0x7f.1": "127.0.0.1", "127.0.1": "127.0.0.1", "0177.0.0.01": "127.0.0.1",
		"10.0x10.1": "10.16.0.1", "0": "0.0.0.0", "0x": "0.0.0.0",
	} {
		got, ok := parseInetAton(in)
		if !ok || got.String() != want {
			t.Errorf("parseInetAton(%q) = %v, %v; want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "1.2.3.4.5", "256.1", "1.256.1.1", "4294967296", "08", "0xg", "a.b", "1..2", "example.com"} {
		if got, ok := parseInetAton(in); ok {
			t.Errorf("parseInetAton(%q) = %v, want no address", in, got)
		}
	}
}

// FuzzHostAddr checks that host parsing never panics, that what it calls an address is one,
// and that a host it refuses at registration is not reported as harmless.
func FuzzHostAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "2130706433", "0x7f.1", "[::1]", "localhost", "example.com", "1.2.3.4.5", "0x", "[fe80::1%eth0]"} {
		f.Add(s)
	}
	sec := Security{}
	f.Fuzz(func(t *testing.T, host string) {
		addr, ok, canonical := hostAddr(host)
		if !ok {
			return
		}
		if !addr.IsValid() {
			t.Fatalf("hostAddr(%q) says ok with no address", host)
		}
		if !canonical && sec.checkHostAddr(host) == nil {
			t.Fatalf("non-standard form %q accepted", host)
		}
	})
}

func TestGuardReviewFindings(t *testing.T) {
	var sec Security
	for _, a := range []string{"::ffff:0:7f00:1", "fec0::1", "2001:2::1", "3fff::1", "4000::1", "::2", "2001:10::1"} {
		if sec.CheckAddr(netip.MustParseAddr(a)) == nil {
			t.Errorf("%s not blocked", a)
		}
	}
	for _, u := range []string{"http://１２７.０.０.１/", "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:8/"} {
		if err := (Security{}).CheckURL(u); err == nil {
			t.Errorf("%s accepted at registration", u)
		}
	}
	if err := (Security{}).CheckURL("https://bücher.example/hooks"); err != nil {
		t.Errorf("an IDN host refused: %v", err)
	}
}
