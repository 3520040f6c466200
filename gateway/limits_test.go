package gateway_test

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhookgw/gateway/config"
)

// heapInUse is the heap in use after a collection, in MiB.
func heapInUse() float64 {
	runtime.GC()
	runtime.GC() // a second cycle empties the sync.Pools' victim caches
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// peakHeap samples the heap in use (garbage included) every millisecond until stop is called,
// which returns the most it saw, in MiB.
func peakHeap() (stop func() float64) {
	done, result := make(chan struct{}), make(chan float64)
	go func() {
		var peak uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				result <- float64(peak) / (1 << 20)
				return
			case <-tick.C:
			}
		}
	}()
	return func() float64 { close(done); return <-result }
}

// rawRequest opens a connection to addr and writes head, then body; it leaves the connection
// open.
func rawRequest(t *testing.T, addr, head string, body []byte) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	return conn
}

// Connections that announce a large body and send only its start, without a token, are answered
// 401 at once and closed, without the body being read or its announced size allocated: the
// heap stays small while they are open, and after they close.
func TestUnauthenticatedBodiesAreNotRead(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Ingest.Tokens = []string{"ingest-token"} })
	addr := strings.TrimPrefix(e.base, "http://")
	const (
		conns     = 400
		announced = 1 << 20 // the most ingest.max_body_bytes (its default) lets through
		sent      = 16 << 10
	)
	routes := []string{"POST /v1/events", "POST /v1/webhooks", "PUT /api/WebhookRegistrations/r1"}
	start := heapInUse()
	t.Logf("heap in use before: %.1f MiB", start)

	stopSampling := peakHeap()
	began := time.Now()
	opened := make([]net.Conn, conns)
	defer func() {
		for _, c := range opened {
			if c != nil {
				c.Close()
			}
		}
	}()
	chunk := []byte("[" + strings.Repeat(" ", sent-1))
	for i := range opened {
		head := fmt.Sprintf("%s HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			routes[i%len(routes)], announced)
		if i%2 == 1 {
			head = strings.Replace(head, "Host: gateway\r\n", "Host: gateway\r\nAuthorization: Bearer wrong-token\r\n", 1)
		}
		opened[i] = rawRequest(t, addr, head, chunk)
	}
	// Every one is answered while it still owes almost all of its body.
	statuses := make([]int, conns)
	closed := make([]bool, conns)
	var wg sync.WaitGroup
	for i, c := range opened {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			statuses[i] = resp.StatusCode
			_, err = br.ReadByte() // the gateway closes the connection: the rest of the body is not read
			closed[i] = resp.Close && err != nil && !isTimeout(err)
		})
	}
	wg.Wait()
	answered := time.Since(began)
	peak := stopSampling()
	open := heapInUse()
	t.Logf("%d connections, each announcing %d bytes and sending %d, all answered in %s: heap in use at most %.1f MiB "+
		"(garbage included), %.1f MiB once they were answered (the client's ends still open)",
		conns, announced, sent, answered.Round(time.Millisecond), peak, open)
	for i, status := range statuses {
		if status != http.StatusUnauthorized || !closed[i] {
			t.Fatalf("connection %d (%s): status %d, closed %v; want 401 and the connection closed", i, routes[i%len(routes)], status, closed[i])
		}
	}
	// Without the fix each connection held a buffer of its announced size: 400 MiB.
	if grown := peak - start; grown > 64 {
		t.Errorf("the heap grew by up to %.1f MiB for %d unauthenticated connections; want at most 64", grown, conns)
	}
	for i, c := range opened {
		c.Close()
		opened[i] = nil
	}
	after := heapInUse()
	t.Logf("heap in use after they closed: %.1f MiB", after)
	if grown := after - start; grown > 16 {
		t.Errorf("the heap kept %.1f MiB after the connections closed; want at most 16", grown)
	}
	// The gateway still serves.
	expect(t, e.doAs("ingest-token", "POST", "/v1/events", `{"type": "task.state.updated"}`), http.StatusAccepted)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// roundTrip writes a request on conn and reads the answer, its body included.
func roundTrip(t *testing.T, conn net.Conn, br *bufio.Reader, request string) (*http.Response, []byte) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// max_connections holds on loopback too (max_connections_per_ip does not: every loopback
// client is the same host). A connection over it is answered 503 and closed; one that closes
// makes room.
func TestMaxConnections(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.MaxConnections = 4
		c.MaxConnectionsPerIP = 1
	})
	addr := strings.TrimPrefix(e.base, "http://")
	const probe = "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 4 { // four keep-alive connections from one loopback address
		c := rawRequest(t, addr, "", nil)
		held = append(held, c)
		if resp, _ := roundTrip(t, c, bufio.NewReader(c), probe); resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("connection %d: %d, closing %v; want 200 on a kept connection", len(held), resp.StatusCode, resp.Close)
		}
	}
	c := rawRequest(t, addr, "", nil)
	resp, body := roundTrip(t, c, bufio.NewReader(c), probe)
	c.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close || !strings.Contains(string(body), "max_connections") {
		t.Fatalf("a fifth connection: %d, closing %v, %s; want 503 naming max_connections, and closed", resp.StatusCode, resp.Close, body)
	}
	held[0].Close() // the gateway sees it close and lets it go
	held = held[1:]
	var scraped []byte
	eventually(t, "a connection served once one has closed", func() bool {
		c := rawRequest(t, addr, "", nil)
		defer c.Close()
		resp, body := roundTrip(t, c, bufio.NewReader(c), "GET /metrics HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
		scraped = body
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(string(scraped), `webhook_gateway_connections_refused_total{listener="listen",reason="max_connections"} `) {
		t.Errorf("no refused connection counted:\n%s", grepLines(scraped, "connections_refused"))
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text []byte, s string) string {
	var out []string
	for line := range strings.Lines(string(text)) {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// Bodies are read up to their route's limit and no further: a Content-Length over it is
// refused before the body is read, a chunked body once the limit is passed, a gzip body by its
// decompressed size; the connection is closed, since the rest of the body is still on it.
func TestBodyLimits(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Ingest.Tokens = []string{"ingest-token"}
		c.Ingest.MaxBodyBytes = 32 << 10
	})
	addr := strings.TrimPrefix(e.base, "http://")
	event := `{"type": "task.state.updated"}`
	gzipped := func(text string) string {
		var b strings.Builder
		zw := gzip.NewWriter(&b)
		io.WriteString(zw, text)
		zw.Close()
		return b.String()
	}
	bomb := gzipped("[" + strings.Repeat(" ", 10<<20) + "]") // 10 MiB of JSON in about 10 KiB
	start := strings.Repeat(" ", 16<<10)
	const ingest = "POST /v1/events HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer ingest-token\r\n"
	for _, c := range []struct {
		name    string
		request string
		status  int
		closed  bool
	}{
		{"an event", ingest + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(event), event), http.StatusAccepted, false},
		{"Content-Length over the limit, 16 KiB of it sent", ingest + "Content-Length: 1048576\r\n\r\n" + start, http.StatusRequestEntityTooLarge, true},
		{"chunked, past the limit, not ended", ingest + "Transfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n", 40<<10, strings.Repeat(" ", 40<<10)), http.StatusRequestEntityTooLarge, true},
		{"chunked, within the limit", ingest + "Transfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(event), event), http.StatusAccepted, false},
		{"gzip", ingest + fmt.Sprintf("Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", len(gzipped(event)), gzipped(event)),
			http.StatusAccepted, false},
		{"gzip over the limit once decompressed", ingest + fmt.Sprintf("Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", len(bomb), bomb),
			http.StatusRequestEntityTooLarge, true},
		{"an encoding not supported", ingest + fmt.Sprintf("Content-Encoding: br\r\nContent-Length: %d\r\n\r\n%s", len(event), event),
			http.StatusUnsupportedMediaType, true},
		{"management, Content-Length over 64 KiB", "POST /v1/webhooks HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer " + adminToken +
			"\r\nContent-Length: 1048576\r\n\r\n" + start, http.StatusRequestEntityTooLarge, true},
		{"a scrape with a body", "GET /metrics HTTP/1.1\r\nHost: gateway\r\nContent-Length: 10485760\r\n\r\n" + start, http.StatusOK, true},
		{"no token, a small body", "POST /v1/events HTTP/1.1\r\nHost: gateway\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(event), event),
			http.StatusUnauthorized, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := rawRequest(t, addr, "", nil)
			defer conn.Close()
			br := bufio.NewReader(conn)
			resp, body := roundTrip(t, conn, br, c.request)
			if resp.StatusCode != c.status || resp.Close != c.closed {
				t.Fatalf("%d, closing %v; want %d, closing %v\n%.300s", resp.StatusCode, resp.Close, c.status, c.closed, body)
			}
			if !c.closed { // the connection serves the next request
				if resp, _ := roundTrip(t, conn, br, "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"); resp.StatusCode != http.StatusOK {
					t.Fatalf("next request on the connection: %d", resp.StatusCode)
				}
			}
		})
	}
}
