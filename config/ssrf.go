package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// BlockedError is why a delivery target's address is refused: its text is what the attempt log
// shows, such as "blocked: 127.0.0.1 is a loopback address".
type BlockedError struct {
	Addr   string
	Reason string
}

func (e *BlockedError) Error() string { return "blocked: " + e.Addr + " is " + e.Reason }

// ErrorType is the error.type OpenTelemetry records for an attempt refused this way.
func (e *BlockedError) ErrorType() string { return "blocked" }

// blockedRanges are the addresses deliveries may not reach unless
// security.allow_private_networks is true (or security.allowed_cidrs names them).
var blockedRanges = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified (this-network) address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private (RFC 1918) address"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared (CGNAT) address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address (cloud metadata lives here)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private (RFC 1918) address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address"},
	{netip.MustParsePrefix("192.88.99.0/24"), "a 6to4 relay address"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private (RFC 1918) address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
	{netip.MustParsePrefix("::/128"), "an unspecified address"},
	{netip.MustParsePrefix("::1/128"), "a loopback address"},
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible IPv6 address (it embeds an IPv4 address)"},
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address (it embeds an IPv4 address)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a local NAT64 address (it embeds an IPv4 address)"},
	{netip.MustParsePrefix("100::/64"), "a discard-only address"},
	{netip.MustParsePrefix("2001::/32"), "a Teredo address (it embeds an IPv4 address)"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address"},
	{netip.MustParsePrefix("2001:2::/48"), "a benchmarking address"},
	{netip.MustParsePrefix("2001:10::/28"), "an ORCHID address"},
	{netip.MustParsePrefix("2001:20::/28"), "an ORCHIDv2 address"},
	{netip.MustParsePrefix("3fff::/20"), "a documentation address"},
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "an IPv4-translated address (it embeds an IPv4 address)"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address (it embeds an IPv4 address)"},
	{netip.MustParsePrefix("fc00::/7"), "a unique local (ULA) address"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
}

// CheckAddr reports whether a delivery may connect to addr: always with
// AllowPrivateNetworks, else when addr is in AllowedCIDRs or in none of the blocked ranges.
// An IPv4-mapped IPv6 address is judged as the IPv4 address it maps. The error is a
// *BlockedError.
func (s Security) CheckAddr(addr netip.Addr) error {
	if s.AllowPrivateNetworks {
		return nil
	}
	addr = addr.WithZone("")
	if addr.Is4In6() {
		addr = addr.Unmap()
	}
	for _, cidr := range s.AllowedCIDRs {
		if p, err := netip.ParsePrefix(cidr); err == nil && p.Contains(addr) {
			return nil
		}
	}
	for _, b := range blockedRanges {
		if b.prefix.Contains(addr) {
			return &BlockedError{Addr: addr.String(), Reason: b.reason}
		}
	}
	if addr.Is6() && !globalUnicast.Contains(addr) {
		return &BlockedError{Addr: addr.String(), Reason: "outside the global unicast range (2000::/3)"}
	}
	return nil
}

// globalUnicast is the only IPv6 range deliveries may reach; the ranges above cut into it.
var globalUnicast = netip.MustParsePrefix("2000::/3")

// hostAddr returns the address a URL host names literally: an IP in any form a resolver might
// accept (dotted decimal, IPv6, or the inet_aton forms: 2130706433, 0x7f.1, 017700000001),
// and localhost. The bool says whether host is one; canonical says whether it was written in
// the standard form.
func hostAddr(host string) (addr netip.Addr, ok, canonical bool) {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	// What the transport will look up: "１２７.０.０.１" is 127.0.0.1 to it (IDNA mapping).
	if ascii, err := idna.Lookup.ToASCII(host); err == nil && ascii != host {
		a, ok, _ := hostAddr(ascii)
		return a, ok, false
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return netip.MustParseAddr("127.0.0.1"), true, true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true, true
	}
	if a, ok := parseInetAton(host); ok {
		return a, true, false
	}
	return netip.Addr{}, false, false
}

// parseInetAton parses the IPv4 forms of inet_aton: one to four parts, each decimal, octal
// (leading 0) or hex (leading 0x), the last filling the remaining bytes.
func parseInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) == 0 || len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" {
			return netip.Addr{}, false
		}
		base := 10
		switch {
		case strings.HasPrefix(p, "0x"):
			base, p = 16, p[2:]
			if p == "" {
				p = "0"
			}
		case len(p) > 1 && p[0] == '0':
			base, p = 8, p[1:]
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 255 {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*i)
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// checkHostAddr refuses, at registration, a host that is an address deliveries may not reach,
// or an IPv4 address in a non-standard form.
func (s Security) checkHostAddr(host string) error {
	addr, ok, canonical := hostAddr(host)
	if !ok {
		return nil
	}
	if !canonical {
		return fmt.Errorf("host %q is an IPv4 address (%s) in a non-standard form; write it as %s", host, addr, addr)
	}
	return s.CheckAddr(addr)
}
