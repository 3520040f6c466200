// Command receiver is a webhook subscriber for trying the gateway out: it prints every
// delivery it gets (the Standard Webhooks headers, the trace context, the credentials and
// custom headers, and the body) and answers 200, or 500 for the first -fail ones, to show
// retries.
//
//	go run ./examples/receiver -addr 127.0.0.1:9000 -fail 2
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "address to listen on")
	fail := flag.Int64("fail", 0, "answer 500 to this many deliveries first")
	flag.Parse()
	log.Printf("receiver listening on http://%s (failing the first %d)", *addr, *fail)
	log.Fatal(http.ListenAndServe(*addr, &receiver{out: os.Stdout, fail: *fail}))
}

// maxBody bounds how much of a body the receiver reads and prints.
const maxBody = 1 << 20

// shown are the headers printed first, in this order, under these names, when present.
var shown = []string{
	"webhook-id",
	"webhook-timestamp",
	"webhook-signature",
	"traceparent",
	"tracestate",
	"authorization",
}

// plumbing are the headers of every request that say nothing about the delivery; every other
// header (a subscription's headers, a plugin's) is printed after the shown ones.
var plumbing = []string{"Accept-Encoding", "Content-Length", "Content-Type", "User-Agent"}

// receiver prints each request to out and answers 500 to the first fail requests, 200 after.
type receiver struct {
	out  io.Writer
	fail int64
	n    atomic.Int64
	mu   sync.Mutex // one request's lines together
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	i := rc.n.Add(1)
	status := http.StatusOK
	if i <= rc.fail {
		status = http.StatusInternalServerError
	}

	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s %s -> %d\n", i, r.Method, r.URL.RequestURI(), status)
	for _, name := range shown {
		if v := r.Header.Values(name); len(v) > 0 {
			fmt.Fprintf(&b, "  %s: %s\n", name, strings.Join(v, ", "))
		}
	}
	var other []string
	for name := range r.Header {
		if !slices.Contains(plumbing, name) && !slices.ContainsFunc(shown, func(s string) bool {
			return http.CanonicalHeaderKey(s) == name
		}) {
			other = append(other, name)
		}
	}
	slices.Sort(other)
	for _, name := range other {
		fmt.Fprintf(&b, "  %s: %s\n", name, strings.Join(r.Header.Values(name), ", "))
	}
	if err != nil {
		fmt.Fprintf(&b, "  (reading the body: %v)\n", err)
	}
	fmt.Fprintf(&b, "  %s\n", body)

	rc.mu.Lock()
	io.WriteString(rc.out, b.String())
	rc.mu.Unlock()
	w.WriteHeader(status)
}
