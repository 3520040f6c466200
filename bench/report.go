package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Report is what one invocation found: its runs and, for the isolation scenario, the verdict.
// --json prints it as it is.
type Report struct {
	Scenario string    `json:"scenario"`
	Runs     []*Result `json:"runs"`
	// VsDirect is the gateway's delivered events/s over the direct loop's (--compare-direct).
	VsDirect float64  `json:"vs_direct,omitempty"`
	Verdict  *Verdict `json:"verdict,omitempty"`
}

// Result is one run's figures. Rates are per second; durations count from the first send.
type Result struct {
	Name             string  `json:"name"` // gateway, direct, alone or with_bad
	Target           string  `json:"target"`
	Subscriptions    int     `json:"subscriptions"`
	BadSubscriptions int     `json:"bad_subscriptions"`
	Concurrency      int     `json:"concurrency"`
	Batch            int     `json:"batch"`
	Rate             float64 `json:"rate"` // the open loop's events/s; 0 for a closed loop

	Sent     int64 `json:"sent"`     // events sent
	Accepted int64 `json:"accepted"` // events in requests answered 2xx (202 from a gateway)
	Refused  int64 `json:"refused"`  // events in requests answered otherwise
	Failed   int64 `json:"failed"`   // events in requests that got no answer
	// Statuses counts the requests answered other than 2xx, by status code.
	Statuses     map[string]int64 `json:"statuses,omitempty"`
	FirstError   string           `json:"first_error,omitempty"`
	SendSeconds  float64          `json:"send_seconds"` // to the last answer
	IngestPerSec float64          `json:"ingest_events_per_sec"`

	// Deliveries counts the accepted events' first receipts, over the healthy subscriptions.
	Deliveries       int64   `json:"deliveries"`
	DeliverSeconds   float64 `json:"deliver_seconds"` // to the last first receipt
	DeliveredPerSec  float64 `json:"delivered_events_per_sec"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	// LatencyMs is from the send (or, at a fixed rate, from when it was due) to the receipt.
	LatencyMs  Latency `json:"latency_ms"`
	Lost       int64   `json:"lost"`       // accepted but not received, per subscription
	Duplicates int64   `json:"duplicates"` // receipts of an event already received
	Foreign    int64   `json:"foreign,omitempty"`
	// Bad counts the requests each bad subscription got.
	Bad         []BadReceived `json:"bad,omitempty"`
	Drained     bool          `json:"drained"` // every accepted event arrived before --drain-timeout
	Interrupted bool          `json:"interrupted,omitempty"`

	// IdleSubscriptions subscribed to IdleEventType, which no event has; IdleRequests counts the
	// requests they got (none, from a correct gateway), and is absent without them.
	IdleSubscriptions int    `json:"idle_subscriptions,omitempty"`
	IdleEventType     string `json:"idle_event_type,omitempty"`
	IdleRequests      *int64 `json:"idle_requests,omitempty"`

	// PeakRSSBytes and CPUSeconds are this process's: load generator and receivers, and the
	// gateway too when it runs in process.
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	CPUSeconds   float64 `json:"cpu_seconds"`
}

// Latency holds percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// BadReceived is what one bad subscription got.
type BadReceived struct {
	Kind     string `json:"kind"`
	Requests int64  `json:"requests"`
}

// Verdict is the isolation scenario's judgement of the run with bad subscriptions against the
// run without.
type Verdict struct {
	RateRatio  float64  `json:"rate_ratio"` // delivered events/s, with bad over alone
	RatePass   bool     `json:"rate_pass"`  // at least 0.90
	P99LimitMs float64  `json:"p99_limit_ms"`
	P99Pass    bool     `json:"p99_pass"`  // p99 with bad within max(2 x alone, 25ms)
	LostPass   bool     `json:"lost_pass"` // nothing lost in either run
	Pass       bool     `json:"pass"`
	Lines      []string `json:"lines"` // the PASS and FAIL lines, as printed
}

// ms returns d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// seconds returns d in seconds, to the millisecond.
func seconds(d time.Duration) float64 { return math.Round(float64(d)/1e6) / 1e3 }

// perSecond returns n/d, or 0 when d is not positive.
func perSecond(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return math.Round(n/d.Seconds()*10) / 10
}

// writeJSON prints r as one JSON object.
func (r *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeText prints r for people.
func (r *Report) writeText(w io.Writer) {
	for i, res := range r.Runs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		res.writeText(w)
	}
	if r.VsDirect > 0 {
		fmt.Fprintf(w, "\ngateway vs direct loop: %s delivered events/s are %.0f%% of the direct loop's %s\n",
			rate(r.Runs[0].DeliveredPerSec), r.VsDirect*100, rate(r.Runs[1].DeliveredPerSec))
	}
	if r.Verdict != nil {
		fmt.Fprintln(w, "\nisolation verdict")
		for _, l := range r.Verdict.Lines {
			fmt.Fprintln(w, "  "+l)
		}
	}
}

func (res *Result) writeText(w io.Writer) {
	load := "closed loop"
	if res.Rate > 0 {
		load = "open loop at " + rate(res.Rate) + " events/s"
	}
	subs := res.subscriptionsText()
	if res.Name == "direct" {
		subs = "posting straight to a receiver"
	}
	fmt.Fprintf(w, "%s: %s; %s; %s, batch %d, %s\n", res.Name, res.Target, subs,
		plural(res.Concurrency, "connection"), res.Batch, load)
	if res.Interrupted {
		fmt.Fprintln(w, "  INTERRUPTED: the figures below are partial")
	}
	fmt.Fprintf(w, "  sent        %s events in %.2fs: %s accepted, %s refused, %s without an answer\n",
		count(res.Sent), res.SendSeconds, count(res.Accepted), count(res.Refused), count(res.Failed))
	if len(res.Statuses) > 0 {
		codes := make([]string, 0, len(res.Statuses))
		for c := range res.Statuses {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		var parts []string
		for _, c := range codes {
			parts = append(parts, fmt.Sprintf("%s x%s", c, count(res.Statuses[c])))
		}
		fmt.Fprintf(w, "  refused     requests answered %s\n", strings.Join(parts, ", "))
	}
	if res.FirstError != "" {
		fmt.Fprintf(w, "  first error %s\n", res.FirstError)
	}
	fmt.Fprintf(w, "  ingest      %s events/s\n", rate(res.IngestPerSec))
	fmt.Fprintf(w, "  delivered   %s events/s (%s deliveries/s: %s in %.2fs)\n",
		rate(res.DeliveredPerSec), rate(res.DeliveriesPerSec), count(res.Deliveries), res.DeliverSeconds)
	l := res.LatencyMs
	fmt.Fprintf(w, "  latency     p50 %s  p90 %s  p99 %s  max %s  (send to receipt)\n",
		msText(l.P50), msText(l.P90), msText(l.P99), msText(l.Max))
	drained := ""
	if !res.Drained && !res.Interrupted {
		drained = "  (not all arrived within --drain-timeout)"
	}
	fmt.Fprintf(w, "  lost        %s   duplicates %s%s\n", count(res.Lost), count(res.Duplicates), drained)
	if res.Foreign > 0 {
		fmt.Fprintf(w, "  foreign     %s requests that were not this run's events\n", count(res.Foreign))
	}
	if len(res.Bad) > 0 {
		var parts []string
		for _, b := range res.Bad {
			parts = append(parts, fmt.Sprintf("%s %s", b.Kind, count(b.Requests)))
		}
		fmt.Fprintf(w, "  bad         requests received: %s\n", strings.Join(parts, ", "))
	}
	if res.IdleRequests != nil {
		verdict := "as it should be"
		if *res.IdleRequests > 0 {
			verdict = "WRONG: they match no event"
		}
		fmt.Fprintf(w, "  idle        %s subscriptions to %s, which no event has: %s requests received (%s)\n",
			count(int64(res.IdleSubscriptions)), res.IdleEventType, count(*res.IdleRequests), verdict)
	}
	rss := "n/a"
	if res.PeakRSSBytes > 0 {
		rss = fmt.Sprintf("%.1f MiB", float64(res.PeakRSSBytes)/(1<<20))
	}
	who := "load generator and receivers"
	if strings.HasPrefix(res.Target, "in-process") {
		who += ", and the gateway"
	}
	fmt.Fprintf(w, "  process     peak RSS %s, CPU %.2fs (this process: %s)\n", rss, res.CPUSeconds, who)
}

// subscriptionsText describes the run's subscriptions, such as "1 subscription, 4 bad and
// 10,000 idle".
func (res *Result) subscriptionsText() string {
	subs := []string{plural(res.Subscriptions, "subscription")}
	if res.BadSubscriptions > 0 {
		subs = append(subs, fmt.Sprintf("%d bad", res.BadSubscriptions))
	}
	if res.IdleSubscriptions > 0 {
		subs = append(subs, count(int64(res.IdleSubscriptions))+" idle")
	}
	if len(subs) == 1 {
		return subs[0]
	}
	return strings.Join(subs[:len(subs)-1], ", ") + " and " + subs[len(subs)-1]
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// count formats n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// rate formats a rate: whole numbers with separators, a decimal below 100.
func rate(r float64) string {
	if r < 100 {
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return count(int64(math.Round(r)))
}

func msText(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
}

// showProgress writes a progress line to w every second until ctx ends, then clears it. It
// is for terminals: it rewrites one line with a carriage return.
func showProgress(ctx context.Context, w io.Writer, name string, g *generator, l *ledger) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastAcc, lastRecv int64
	subs := int64(len(l.subs))
	for {
		select {
		case <-ctx.Done():
			fmt.Fprint(w, "\r\x1b[K")
			return
		case <-tick.C:
		}
		acc, recv := l.progress()
		phase := "sending"
		if g.finished.Load() {
			phase = "draining"
		}
		fmt.Fprintf(w, "\r\x1b[K%s %5.0fs  %s  accepted %s (%s/s)  delivered %s of %s (%s/s)",
			name, (g.clock() - g.start).Seconds(), phase, count(acc), rate(float64(acc-lastAcc)),
			count(recv), count(acc*subs), rate(float64(recv-lastRecv)))
		lastAcc, lastRecv = acc, recv
	}
}

// showCount writes "what: done of total" to w four times a second until ctx ends, then clears
// it. It is for terminals: it rewrites one line with a carriage return.
func showCount(ctx context.Context, w io.Writer, what string, done *atomic.Int64, total int) {
	tick := time.NewTicker(time.Second / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprint(w, "\r\x1b[K")
			return
		case <-tick.C:
		}
		fmt.Fprintf(w, "\r\x1b[K%s: %s of %s", what, count(done.Load()), count(int64(total)))
	}
}
