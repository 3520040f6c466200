package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kinds of receiver. A healthy one records every event in the ledger and answers 204; the
// others only count the requests they get.
const (
	kindHealthy = "healthy"
	kindIdle    = "idle" // answers 204; the idle subscriptions, which match no event, point at it
	kindHang    = "hang" // holds the request until the client goes away
	kind500     = "500"  // answers 500
	kind429     = "429"  // answers 429 with Retry-After: 1
	kindSlow    = "slow" // answers 200 after slowDelay
)

// badKinds are the kinds --bad-subscriptions cycles through.
var badKinds = []string{kindHang, kind500, kind429, kindSlow}

// slowDelay is how long a slow receiver takes to answer.
const slowDelay = 3 * time.Second

// maxReceivedBody bounds what a receiver reads of a request.
const maxReceivedBody = 4 << 20

// receiver is a subscriber: a net/http server of its own on a loopback port.
type receiver struct {
	kind     string
	url      string
	srv      *http.Server
	requests atomic.Int64

	released    chan struct{}
	releaseOnce sync.Once
}

// startReceiver starts a receiver of kind listening on host. A healthy one records what it
// receives in sub of l, which reads event numbers from ids that start with prefix and
// receipt times from clock.
func startReceiver(host, kind string, l *ledger, sub int, prefix string, clock func() time.Duration) (*receiver, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	r := &receiver{
		kind:     kind,
		url:      "http://" + ln.Addr().String() + "/" + kind,
		released: make(chan struct{}),
	}
	var h http.HandlerFunc
	if kind == kindHealthy {
		h = func(w http.ResponseWriter, req *http.Request) {
			r.requests.Add(1)
			body, err := io.ReadAll(io.LimitReader(req.Body, maxReceivedBody))
			at := clock()
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			record(body, l, sub, prefix, at)
			w.WriteHeader(http.StatusNoContent)
		}
	} else {
		h = r.bad
	}
	r.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go r.srv.Serve(ln)
	return r, nil
}

// bad answers as the receiver's kind says, or 200 at once after release. It serves the idle
// receiver too.
func (r *receiver) bad(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	io.Copy(io.Discard, io.LimitReader(req.Body, maxReceivedBody))
	select {
	case <-r.released:
		return
	default:
	}
	switch r.kind {
	case kindIdle:
		w.WriteHeader(http.StatusNoContent)
	case kindHang:
		select {
		case <-req.Context().Done():
		case <-r.released:
		}
	case kind500:
		w.WriteHeader(http.StatusInternalServerError)
	case kind429:
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	case kindSlow:
		t := time.NewTimer(slowDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-req.Context().Done():
		case <-r.released:
		}
	}
}

// release makes a bad receiver answer 200 at once, to requests waiting and to come, so that
// the gateway's rounds of attempts end quickly when the run is over.
func (r *receiver) release() {
	r.releaseOnce.Do(func() { close(r.released) })
}

// close stops the receiver and closes its connections.
func (r *receiver) close() error {
	r.release()
	if err := r.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("receiver %s: %w", r.url, err)
	}
	return nil
}

// wireEvent is what a receiver reads of an event.
type wireEvent struct {
	ID    string `json:"id"`
	Bench struct {
		SentNs int64 `json:"sent_ns"`
	} `json:"bench"`
}

// record reads one event or an array of them from body and enters each in the ledger.
func record(body []byte, l *ledger, sub int, prefix string, at time.Duration) {
	var events []wireEvent
	var err error
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
		err = json.Unmarshal(body, &events)
	} else {
		events = make([]wireEvent, 1)
		err = json.Unmarshal(body, &events[0])
	}
	if err != nil {
		l.foreign(sub)
		return
	}
	for _, ev := range events {
		n, err := strconv.ParseInt(strings.TrimPrefix(ev.ID, prefix), 10, 64)
		if !strings.HasPrefix(ev.ID, prefix) || err != nil || n < 0 {
			l.foreign(sub)
			continue
		}
		l.receive(sub, n, time.Duration(ev.Bench.SentNs), at)
	}
}
