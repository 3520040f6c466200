package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Inbound limits. The server streams request bodies (fiber's StreamRequestBody): it calls the
// handler once the headers and at most the first 8 KiB of a body have come, instead of first
// reading, into a buffer of the announced Content-Length, the whole body. Handlers check the
// token first, then read the body with readBody, up to their route's limit. A body no handler
// read is left on the connection, which closeUnreadBodies closes.

// bodyRead marks, in c.Locals, a request whose body was read to its end.
type bodyRead struct{}

// readBody reads the request body: at most limit bytes, else tooLarge. A Content-Length over
// the limit is refused before a byte is read. The body is read as it arrives, into a buffer
// that grows with what has come, so that an announced length alone allocates nothing.
// Content-Encoding: gzip is decompressed, and the limit holds for the body both as sent and
// decompressed; any other encoding is a 415.
func readBody(c *fiber.Ctx, limit int64, tooLarge error) ([]byte, error) {
	if n := c.Request().Header.ContentLength(); n > 0 && int64(n) > limit {
		return nil, tooLarge
	}
	var stream io.Reader = c.Context().RequestBodyStream()
	if stream == nil { // read whole already (a server that does not stream)
		stream = bytes.NewReader(c.Request().Body())
	}
	body := io.Reader(&capReader{r: stream, left: limit})
	what := "the request body could not be read"
	switch enc := strings.ToLower(strings.TrimSpace(c.Get(fiber.HeaderContentEncoding))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, bodyError(err, tooLarge, "the request body is not valid gzip")
		}
		body, what = &capReader{r: zr, left: limit}, "the request body is not valid gzip"
	default:
		return nil, newProblem(fiber.StatusUnsupportedMediaType,
			fmt.Sprintf("Content-Encoding %q is not supported; send the body as it is, or gzip-compressed", enc))
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, bodyError(err, tooLarge, what)
	}
	c.Locals(bodyRead{}, true)
	return data, nil
}

// errOverLimit is what a capReader returns past its limit.
var errOverLimit = errors.New("over the limit")

// capReader reads from r, and fails with errOverLimit once it has read more than left bytes.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	if c.left -= int64(n); c.left < 0 {
		return n, errOverLimit
	}
	return n, err
}

// bodyError is the problem for a body that could not be read: tooLarge past the limit, 408
// when it did not come in time, else 400 saying what.
func bodyError(err, tooLarge error, what string) error {
	var ne net.Error
	switch {
	case errors.Is(err, errOverLimit):
		return tooLarge
	case errors.As(err, &ne) && ne.Timeout():
		return newProblem(fiber.StatusRequestTimeout, "the request body did not arrive in time")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return newProblem(fiber.StatusBadRequest, what+": it ended early")
	}
	return newProblem(fiber.StatusBadRequest, what)
}

// closeUnreadBodies is the first middleware: after a request whose body was not read to its end
// (one refused before its body was read: 401, 404, 405, 413), it closes the connection, since
// the rest of the body is still on it.
func closeUnreadBodies(c *fiber.Ctx) error {
	err := c.Next()
	// A length, or -1: chunked (-2 is no body: a GET).
	if n := c.Request().Header.ContentLength(); (n > 0 || n == -1) && c.Locals(bodyRead{}) == nil {
		// A client still sending a body it announced would get a reset, not the answer, if the
		// connection closed under it: a body of at most lingerLimit is read to the end (and
		// dropped, nothing kept) first. A larger one is not worth reading.
		if stream := c.Context().RequestBodyStream(); stream != nil && n > 0 && n <= lingerLimit {
			io.Copy(io.Discard, io.LimitReader(stream, lingerLimit))
		}
		c.Context().SetConnectionClose()
	}
	return err
}

// lingerLimit is the largest unread body closeUnreadBodies reads to the end before it closes
// the connection.
const lingerLimit = 256 << 10

// connLimiter wraps a listener, refusing connections over its limits (0 is none): 503 once it
// holds maxConns, 429 for a client address (an IPv4 address, an IPv6 /64: one client usually
// has a whole /64) that already holds maxPerIP. Loopback clients count only toward maxConns:
// on a loopback listener every client is the same host. A refused connection is answered and
// closed at once, and counted in refused.
type connLimiter struct {
	net.Listener
	maxConns, maxPerIP int
	refused            func(reason string)
	log                *slog.Logger
	name               string // the listener's configuration key, for the log
	// client says which client address a connection counts under, and whether it counts
	// toward maxPerIP at all: clientPrefix.
	client func(net.Addr) (netip.Prefix, bool)

	mu      sync.Mutex
	open    int
	perIP   map[netip.Prefix]int
	lastLog time.Time
}

func newConnLimiter(ln net.Listener, maxConns, maxPerIP int, name string, log *slog.Logger, refused func(string)) *connLimiter {
	return &connLimiter{Listener: ln, maxConns: maxConns, maxPerIP: maxPerIP, name: name, log: log, refused: refused,
		client: clientPrefix, perIP: make(map[netip.Prefix]int)}
}

// Reasons a connection is refused, as the metric names them.
const (
	refusedMaxConns = "max_connections"
	refusedPerIP    = "max_connections_per_ip"
)

// Accept returns the next connection within the limits, refusing the others.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client, counted := l.client(c.RemoteAddr())
		counted = counted && l.maxPerIP > 0
		l.mu.Lock()
		reason := ""
		switch {
		case l.maxConns > 0 && l.open >= l.maxConns:
			reason = refusedMaxConns
		case counted && l.perIP[client] >= l.maxPerIP:
			reason = refusedPerIP
		default:
			l.open++
			if counted {
				l.perIP[client]++
			}
		}
		logIt := reason != "" && time.Since(l.lastLog) > time.Minute
		if logIt {
			l.lastLog = time.Now()
		}
		l.mu.Unlock()
		if reason == "" {
			return &limitedConn{Conn: c, release: func() { l.release(client, counted) }}, nil
		}
		l.refused(reason)
		if logIt {
			l.log.Warn("connections refused: the listener holds as many as it may (logged once a minute)",
				"listener", l.name, "reason", reason, "client", client.String())
		}
		refuse(c, reason)
	}
}

func (l *connLimiter) release(client netip.Prefix, counted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if counted {
		if l.perIP[client]--; l.perIP[client] <= 0 {
			delete(l.perIP, client)
		}
	}
}

// clientPrefix is the address a client's connections are counted under: its IPv4 address or
// its IPv6 /64. It reports false for loopback and unknown addresses, which are not counted.
func clientPrefix(addr net.Addr) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() {
		return netip.Prefix{}, false
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// refuse answers a connection over a limit and closes it. The answer is small enough for the
// socket's buffer, so writing it does not wait for the client (the deadline makes sure).
func refuse(c net.Conn, reason string) {
	status, detail := http.StatusServiceUnavailable, "the gateway serves as many connections as max_connections allows; try again"
	if reason == refusedPerIP {
		status, detail = http.StatusTooManyRequests, "this client address holds as many connections as max_connections_per_ip allows"
	}
	body, _ := json.Marshal(Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\nContent-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	c.Close()
}

// limitedConn is a connection a connLimiter counts until it is closed.
type limitedConn struct {
	net.Conn
	released atomic.Bool
	release  func()
}

func (c *limitedConn) Close() error {
	if c.released.CompareAndSwap(false, true) {
		c.release()
	}
	return c.Conn.Close()
}
