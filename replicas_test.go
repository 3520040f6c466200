package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/webhookgw/gateway/internal/pgtest"
)

// Timings of TestReplicasShareOnePostgres: its gateways' delivery.lease, and the engine's poll
// (not configurable: delivery.PollInterval's default). A delivery the killed replica held is
// taken over once its lease has run out, when the survivor next claims for its subscription:
// at its next ingest or poll.
const (
	replicaLease = 3 * time.Second
	replicaPoll  = 5 * time.Second
)

// replicaReceiver is a subscriber that records every request it gets, in order. While catch
// is set it holds, unanswered, the requests that the process whose pid it names sends, until
// their connection closes (the process is killed) or the test ends: deliveries that process
// has in flight when it dies.
type replicaReceiver struct {
	catch atomic.Int64 // a pid, or 0
	stop  chan struct{}

	mu       sync.Mutex
	arrivals []replicaArrival
	held     []replicaArrival // requests held while catch was set
	problems []string
}

type replicaArrival struct {
	n         int // the event's number: its place in ingest order
	webhookID string
	at        time.Time
}

func newReplicaReceiver() *replicaReceiver { return &replicaReceiver{stop: make(chan struct{})} }

func (rc *replicaReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// A replica killed while it sent this one: it was never delivered, and the other
		// replica sends it again.
		return
	}
	var ev struct {
		ID string `json:"id"`
	}
	err = json.Unmarshal(body, &ev)
	n, nerr := strconv.Atoi(strings.TrimPrefix(ev.ID, "rep-"))
	a := replicaArrival{n: n, webhookID: r.Header.Get("Webhook-Id"), at: time.Now()}
	rc.mu.Lock()
	switch {
	case err != nil || nerr != nil:
		rc.problems = append(rc.problems, fmt.Sprintf("a delivery without an event id of this test (err %v): %.200q", err, body))
	case a.webhookID == "":
		rc.problems = append(rc.problems, fmt.Sprintf("event %s: delivered without a webhook-id header", ev.ID))
	}
	// Every request that arrives whole counts as received: a subscriber may have acted on it
	// although its answer never reached the gateway.
	rc.arrivals = append(rc.arrivals, a)
	pid := rc.catch.Load()
	hold := pid != 0 && socketOwner(r.RemoteAddr, int(pid))
	if hold {
		rc.held = append(rc.held, a)
	}
	rc.mu.Unlock()
	if hold {
		select {
		case <-r.Context().Done(): // the connection closed: the process died
			return
		case <-rc.stop:
		}
	}
	w.WriteHeader(http.StatusOK)
}

// received returns, for each event number, how often it arrived.
func (rc *replicaReceiver) received() map[int]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	m := make(map[int]int)
	for _, a := range rc.arrivals {
		m[a.n]++
	}
	return m
}

func (rc *replicaReceiver) heldCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.held)
}

// socketOwner reports whether the TCP connection whose far end is remote (a loopback
// address, as a server sees it) belongs to the process pid: the inode of the socket bound to
// that port, from /proc/net/tcp, is among the process's open files.
func socketOwner(remote string, pid int) bool {
	_, port, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	local := fmt.Sprintf(":%04X", p)
	inode := ""
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && strings.HasSuffix(fields[1], local) {
				inode = fields[9]
				break
			}
		}
		f.Close()
		if inode != "" {
			break
		}
	}
	if inode == "" {
		return false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && link == want {
			return true
		}
	}
	return false
}

// TestReplicasShareOnePostgres runs two gateway processes on one PostgreSQL schema, posts
// events to both in turn, kills one with SIGKILL halfway while it has deliveries of both
// subscriptions in flight, and checks what the survivor makes of it:
//
//   - every event answered 202 reaches both subscribers;
//   - duplicates (arrivals of an event after its first) are at most what the killed replica
//     could have had in flight: each subscription's max_in_flight, which a claim keeps across
//     replicas (4 for the unordered subscription, 1 for the fifo one);
//   - the fifo subscriber gets the events in ingest order: each arrival is either the first
//     of an event later in ingest order than every event that arrived before it, or another
//     arrival of the event that arrived last (the head, sent again by the survivor after the
//     killed replica's lease ran out, which passes nothing);
//   - the survivor takes over the deliveries the killed replica held within a lease and a
//     poll (and a margin), measured from the kill to its first delivery of one of them.
//
// Linux only: the subscribers tell the replicas' requests apart through /proc.
func TestReplicasShareOnePostgres(t *testing.T) {
	dsn := pgtest.Schema(t)
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("needs /proc/net/tcp to tell the replicas' requests apart")
	}
	const (
		batches   = 60
		perBatch  = 5
		pace      = 20 * time.Millisecond // between posts
		eventType = "transaction.state.updated"
		unordered = 4 // the unordered subscription's max_in_flight
	)
	started := time.Now()
	unorderedRC, fifoRC := newReplicaReceiver(), newReplicaReceiver()
	unorderedSrv, fifoSrv := httptest.NewServer(unorderedRC), httptest.NewServer(fifoRC)
	t.Cleanup(unorderedSrv.Close)
	t.Cleanup(fifoSrv.Close)
	t.Cleanup(func() { close(unorderedRC.stop); close(fifoRC.stop) }) // first: held requests end
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`admin:
  tokens: [%s]
store:
  driver: postgres
  dsn: %q
  max_conns: 8
delivery:
  lease: %s
security:
  require_https: false
  allow_private_networks: true
telemetry:
  log_level: warn
subscriptions:
  - id: unordered
    url: %s/hooks
    events: [%s]
    max_in_flight: %d
  - id: fifo
    url: %s/hooks
    events: [%s]
    ordering: fifo
`, testToken, dsn, replicaLease, unorderedSrv.URL, eventType, unordered, fifoSrv.URL, eventType))
	// Each replica its own ports (GATEWAY_LISTEN), the same file and database.
	a := startGateway(t, dir, cfg)
	b := startGateway(t, dir, cfg)

	// One poster, batch after batch, each to the other replica: ingest order is event order.
	var (
		mu       sync.Mutex
		accepted = make(map[int]bool)
		postFail int
		half     = make(chan struct{})
		posted   = make(chan struct{})
	)
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(p *process, batch int) error {
		events := make([]map[string]any, perBatch)
		for i := range events {
			events[i] = map[string]any{"id": fmt.Sprintf("rep-%05d", batch*perBatch+i), "type": eventType,
				"transaction": map[string]any{"state": "settled"}}
		}
		body, _ := json.Marshal(events)
		resp, err := client.Post(p.base+"/v1/events", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("status %d: %s", resp.StatusCode, data)
		}
		var replies []ingestReplyJSON
		if err := json.Unmarshal(data, &replies); err != nil || len(replies) != perBatch {
			return fmt.Errorf("202 with %d replies (%v): %s", len(replies), err, data)
		}
		mu.Lock()
		defer mu.Unlock()
		for i, r := range replies {
			if r.Deliveries != 2 || r.Duplicate {
				t.Errorf("batch %d: reply %d: %+v, want two deliveries and no duplicate", batch, i, r)
			}
			accepted[batch*perBatch+i] = true
		}
		return nil
	}
	var killed atomic.Bool
	go func() {
		defer close(posted)
		for batch := range batches {
			p := []*process{a, b}[batch%2]
			if err := post(p, batch); err != nil {
				mu.Lock()
				postFail++
				mu.Unlock()
				if p == b || !killed.Load() {
					t.Errorf("batch %d to replica %s failed: %v", batch, map[*process]string{a: "A", b: "B"}[p], err)
				}
			}
			if batch == batches/2 {
				close(half)
			}
			time.Sleep(pace)
		}
	}()

	// Halfway, hold replica A's requests until it has deliveries of both subscriptions in
	// flight, then kill it: what it holds is what the survivor must take over.
	<-half
	pidA := a.cmd.Process.Pid
	unorderedRC.catch.Store(int64(pidA))
	fifoRC.catch.Store(int64(pidA))
	for deadline := time.Now().Add(15 * time.Second); unorderedRC.heldCount() == 0 || fifoRC.heldCount() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("replica A had no delivery of each subscription in flight within 15s (unordered %d, fifo %d)\nA:\n%s\nB:\n%s",
				unorderedRC.heldCount(), fifoRC.heldCount(), a.output, b.output)
		}
	}
	killed.Store(true)
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed replica did not exit within 10s")
	}
	unorderedRC.catch.Store(0)
	fifoRC.catch.Store(0)
	<-posted

	// Every accepted event reaches both subscribers.
	mu.Lock()
	nAccepted := len(accepted)
	mu.Unlock()
	missing := func() (m []string) {
		for _, rc := range []*replicaReceiver{unorderedRC, fifoRC} {
			got := rc.received()
			for n := range accepted {
				if got[n] == 0 {
					m = append(m, fmt.Sprintf("rep-%05d to %s", n, map[*replicaReceiver]string{unorderedRC: "unordered", fifoRC: "fifo"}[rc]))
				}
			}
		}
		slices.Sort(m)
		return m
	}
	for deadline := time.Now().Add(30 * time.Second); len(missing()) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			m := missing()
			t.Fatalf("%d deliveries of %d accepted events missing 30s after posting ended, such as %v\nB:\n%s",
				len(m), nAccepted, m[:min(len(m), 10)], b.output)
		}
	}
	caughtUp := time.Since(killedAt)
	// Arrivals come before their outcomes are recorded: once nothing is pending, no more come.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		pending := 0
		for _, sub := range []string{"unordered", "fifo"} {
			code, body := b.requestList(testToken, "/v1/webhooks/"+sub+"/deliveries?status=pending&limit=10")
			if code != http.StatusOK {
				t.Fatalf("listing %s's pending deliveries: %d", sub, code)
			}
			pending += len(body)
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries still pending 30s after every accepted event arrived\nB:\n%s", b.output)
		}
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\n%s", code, b.output)
	}

	takeover := time.Duration(-1)
	for name, rc := range map[string]*replicaReceiver{"unordered": unorderedRC, "fifo": fifoRC} {
		rc.mu.Lock()
		for _, p := range rc.problems {
			t.Errorf("%s: %s", name, p)
		}
		count := make(map[int]int)
		duplicates := 0
		for _, a := range rc.arrivals {
			if count[a.n]++; count[a.n] > 1 {
				duplicates++
			}
		}
		// Each delivery replica A held arrives again from the survivor, after the kill.
		subTakeover := time.Duration(-1)
		for _, h := range rc.held {
			i := slices.IndexFunc(rc.arrivals, func(a replicaArrival) bool { return a.webhookID == h.webhookID && a.at.After(killedAt) })
			if i < 0 {
				t.Errorf("%s: delivery %s (event rep-%05d), held by the killed replica, never arrived again", name, h.webhookID, h.n)
				continue
			}
			if d := rc.arrivals[i].at.Sub(killedAt); subTakeover < 0 || d < subTakeover {
				subTakeover = d
			}
		}
		if takeover < 0 || subTakeover >= 0 && subTakeover < takeover {
			takeover = subTakeover
		}
		limit := unordered
		if name == "fifo" {
			limit = 1
			last, lastFirst := -1, -1
			for _, a := range rc.arrivals {
				switch {
				case a.n > last:
					last, lastFirst = a.n, a.n
				case a.n == lastFirst:
					// the head again
				default:
					t.Errorf("fifo: rep-%05d arrived after rep-%05d had", a.n, last)
				}
			}
		}
		t.Logf("%s subscriber: %d arrivals, %d events, %d duplicates (at most %d: the killed replica's in-flight limit); "+
			"the killed replica held %d, taken over %v after the kill", name, len(rc.arrivals), len(count), duplicates, limit,
			len(rc.held), subTakeover.Round(time.Millisecond))
		if subTakeover > replicaLease+replicaPoll+2*time.Second {
			t.Errorf("%s: the survivor took over %v after the kill, more than a lease (%v) and a poll (%v) and a margin",
				name, subTakeover, replicaLease, replicaPoll)
		}
		if duplicates > limit {
			t.Errorf("%s: %d duplicates, more than the %d deliveries the killed replica could have had in flight", name, duplicates, limit)
		}
		rc.mu.Unlock()
	}
	bound := replicaLease + replicaPoll + 2*time.Second
	t.Logf("replicas: %d events accepted of %d posted (%d posts failed, to the killed replica), first takeover %v after the kill "+
		"(bound %v), caught up %v after the kill, %v in all",
		nAccepted, batches*perBatch, postFail, takeover.Round(time.Millisecond), bound, caughtUp.Round(time.Millisecond),
		time.Since(started).Round(time.Millisecond))
}

// requestList makes an admin GET that answers a JSON array.
func (p *process) requestList(token, path string) (int, []any) {
	p.t.Helper()
	req, err := http.NewRequest("GET", p.base+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []any
	json.NewDecoder(resp.Body).Decode(&list)
	return resp.StatusCode, list
}
