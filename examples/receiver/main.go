// Command receiver is a webhook subscriber for trying the gateway out: it prints every
// delivery it gets and answers 200, or 500 for the first -fail ones, to show retries.
//
//	go run ./examples/receiver -addr 127.0.0.1:9000 -fail 2
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync/atomic"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "address to listen on")
	fail := flag.Int64("fail", 0, "answer 500 to this many deliveries first")
	flag.Parse()
	var n atomic.Int64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		i := n.Add(1)
		status := http.StatusOK
		if i <= *fail {
			status = http.StatusInternalServerError
		}
		fmt.Printf("#%d %s %s -> %d\n  webhook-id: %s\n  webhook-timestamp: %s\n  authorization: %q\n  %s\n",
			i, r.Method, r.URL.Path, status, r.Header.Get("Webhook-Id"), r.Header.Get("Webhook-Timestamp"),
			r.Header.Get("Authorization"), body)
		w.WriteHeader(status)
	})
	log.Printf("receiver listening on http://%s (failing the first %d)", *addr, *fail)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
