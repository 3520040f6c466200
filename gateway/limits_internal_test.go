package gateway

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestClientPrefix(t *testing.T) {
	for addr, want := range map[string]string{
		"203.0.113.7:4000":               "203.0.113.7/32",
		"[::ffff:203.0.113.7]:4000":      "203.0.113.7/32",
		"[2001:db8:1:2:3:4:5:6]:4000":    "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:4000":    "2001:db8:1:2::/64", // the same /64: the same client
		"127.0.0.1:4000":                 "",                  // loopback: not counted
		"127.9.9.9:4000":                 "",
		"[::1]:4000":                     "",
		"[::ffff:127.0.0.1]:4000":        "",
		"not an address":                 "",
		"[fe80::1%eth0]:4000":            "fe80::/64",
		"[2001:db8:ffff:ffff::9]:65535":  "2001:db8:ffff:ffff::/64",
		"192.168.1.1:1":                  "192.168.1.1/32",
		"[2001:db8::ffff:192.0.2.1]:443": "2001:db8::/64",
	} {
		p, counted := clientPrefix(fakeAddr(addr))
		got := ""
		if counted {
			got = p.String()
		}
		if got != want {
			t.Errorf("%s: %q, want %q", addr, got, want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// A client address over max_connections_per_ip, and any client over max_connections, is answered
// 429 or 503 at once and closed; a closed connection makes room. Real loopback connections,
// with the loopback exemption turned off.
func TestConnLimiter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	refused := map[string]int{}
	l := newConnLimiter(ln, 3, 2, "listen", slog.New(slog.DiscardHandler), func(reason string) {
		mu.Lock()
		defer mu.Unlock()
		refused[reason]++
	})
	// Every connection comes from loopback: the test says which client the next one stands
	// for, and dials one at a time.
	var client netip.Prefix
	l.client = func(net.Addr) (netip.Prefix, bool) {
		mu.Lock()
		defer mu.Unlock()
		return client, true
	}
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		l.Close()
		for c := range accepted {
			c.Close()
		}
	}()

	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("198.51.100.1/32")
	// dial connects as the client from.
	dial := func(from netip.Prefix) net.Conn {
		t.Helper()
		mu.Lock()
		client = from
		mu.Unlock()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	takeAccepted := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("a connection within the limits was not accepted")
			return nil
		}
	}
	refusedWith := func(c net.Conn, status int) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("want a %d answer: %v", status, err)
		}
		resp.Body.Close()
		if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/problem+json" || !resp.Close {
			t.Fatalf("answer %d %v, want %d, a problem document and the connection closed", resp.StatusCode, resp.Header, status)
		}
		c.Close()
	}

	a1 := dial(a)
	defer a1.Close()
	s1 := takeAccepted()
	a2 := dial(a)
	defer a2.Close()
	s2 := takeAccepted()
	// Client A holds its two: its third is refused with 429.
	refusedWith(dial(a), http.StatusTooManyRequests)
	// Another client may still connect, up to max_connections (3).
	b1 := dial(b)
	defer b1.Close()
	s3 := takeAccepted()
	refusedWith(dial(b), http.StatusServiceUnavailable)
	// Closing one of A's connections (as the server does when it ends) makes room for A.
	s1.Close()
	a3 := dial(a)
	defer a3.Close()
	takeAccepted().Close()
	s2.Close()
	s3.Close()

	mu.Lock()
	defer mu.Unlock()
	if refused[refusedPerIP] != 1 || refused[refusedMaxConns] != 1 {
		t.Errorf("refused %v, want one of each", refused)
	}
}
