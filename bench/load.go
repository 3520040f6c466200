package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// eventType is the type of every event the load generator sends.
const eventType = "transaction.state.updated"

// idleEventType is the type the idle subscriptions (--idle-subscriptions) subscribe to: the
// default configuration's other type, which the load never sends.
const idleEventType = "task.state.updated"

// generator is the load: concurrency workers posting events to urls, each request to the next
// in turn, over HTTP/1.1 keep-alive
// connections, in a closed loop (each posts as soon as its previous post is answered) or,
// with rate set, an open loop where each request has its due time and latency counts from it.
type generator struct {
	urls        []string
	token       string // bearer token for urls, if any
	client      *http.Client
	prefix      string // event ids are prefix + number
	concurrency int
	batch       int
	events      int64         // how many to send, when duration is 0
	duration    time.Duration // how long to send
	rate        float64       // events per second; 0 is a closed loop
	ledger      *ledger
	origin      time.Time // the run's clock: sent_ns and receipts count from it

	start    time.Duration // when sending began, on the run's clock
	next     atomic.Int64  // the next request number
	sent     atomic.Int64  // events sent
	accepted atomic.Int64  // events in requests answered 2xx
	refused  atomic.Int64  // events in requests answered otherwise
	failed   atomic.Int64  // events in requests that got no answer
	finished atomic.Bool   // run has returned

	mu         sync.Mutex
	statuses   map[int]int64 // requests answered other than 2xx, by status
	firstError string
	lastAnswer time.Duration // on the run's clock
}

// newClient returns an HTTP client that keeps up to conns connections to one host open for
// reuse, with no proxy and no compression.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns + 16,
			MaxIdleConnsPerHost: conns + 16,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// clock returns the time since the run's origin.
func (g *generator) clock() time.Duration { return time.Since(g.origin) }

// run sends the load, from g.start on, and returns when it has all been answered, or ctx
// has ended.
func (g *generator) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range g.concurrency {
		wg.Go(func() { g.work(ctx) })
	}
	wg.Wait()
	g.finished.Store(true)
}

// work posts requests until there are none left to send.
func (g *generator) work(ctx context.Context) {
	for ctx.Err() == nil {
		req := g.next.Add(1) - 1
		url := g.urls[req%int64(len(g.urls))]
		first := req * int64(g.batch)
		n := int64(g.batch)
		if g.duration == 0 {
			if first >= g.events {
				return
			}
			n = min(n, g.events-first)
		}
		var sent time.Duration
		if g.rate > 0 {
			// Due when the events before it have been sent at rate.
			due := time.Duration(float64(first) / g.rate * float64(time.Second))
			if g.duration > 0 && due >= g.duration {
				return
			}
			sent = g.start + due
			if !sleepUntil(ctx, g.origin.Add(sent)) {
				return
			}
		} else {
			sent = g.clock()
			if g.duration > 0 && sent-g.start >= g.duration {
				return
			}
		}
		g.post(ctx, url, g.encode(first, n, sent), first, n)
	}
}

// sleepUntil waits until t and reports whether ctx is still alive.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// encode returns the body for events first to first+n-1: one object, or an array when the
// batch is more than one event. Each event carries its id and its send time in nanoseconds on
// the run's clock, at bench.sent_ns.
func (g *generator) encode(first, n int64, sent time.Duration) []byte {
	b := make([]byte, 0, n*160+2)
	if g.batch > 1 {
		b = append(b, '[')
	}
	for e := first; e < first+n; e++ {
		if e > first {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = append(b, g.prefix...)
		b = strconv.AppendInt(b, e, 10)
		b = append(b, `","type":"`+eventType+`","transaction":{"id":"tx-`...)
		b = strconv.AppendInt(b, e, 10)
		b = append(b, `","state":"completed"},"bench":{"sent_ns":`...)
		b = strconv.AppendInt(b, int64(sent), 10)
		b = append(b, `}}`...)
	}
	if g.batch > 1 {
		b = append(b, ']')
	}
	return b
}

// post sends one request and records its answer.
func (g *generator) post(ctx context.Context, url string, body []byte, first, n int64) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		g.fail(n, err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if g.token != "" {
		req.Header.Set("Authorization", "Bearer "+g.token)
	}
	g.sent.Add(n)
	resp, err := g.client.Do(req)
	if err != nil {
		g.fail(n, err)
		return
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	var answer []byte
	if !ok {
		answer, _ = io.ReadAll(io.LimitReader(resp.Body, 300))
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	at := g.clock()
	if ok {
		// The ledger first: a drain that sees the count must find the events accepted.
		g.ledger.accept(first, n)
		g.accepted.Add(n)
	} else {
		g.refused.Add(n)
	}
	g.mu.Lock()
	g.lastAnswer = max(g.lastAnswer, at)
	if !ok {
		g.statuses[resp.StatusCode]++
		if g.firstError == "" {
			g.firstError = fmt.Sprintf("HTTP %d from %s: %s", resp.StatusCode, url, bytes.TrimSpace(answer))
		}
	}
	g.mu.Unlock()
}

// fail records a request that got no answer.
func (g *generator) fail(n int64, err error) {
	g.failed.Add(n)
	g.mu.Lock()
	if g.firstError == "" {
		g.firstError = err.Error()
	}
	g.mu.Unlock()
}
