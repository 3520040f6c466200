package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"
)

// runSpec is one run: where the events go and who receives them.
type runSpec struct {
	name    string
	direct  bool // post straight to the one healthy receiver, with no gateway
	healthy int
	bad     int
	idle    int  // subscriptions to idleEventType, which match no event
	profile bool // write the profiles --cpuprofile and --memprofile ask for
}

// runOne makes one run: it starts the target and the receivers, registers the subscriptions,
// sends the load, waits for the accepted events to arrive, and tears everything down. It
// returns the run's figures, with any error of the teardown.
func runOne(ctx context.Context, o *Options, sp runSpec, stderr io.Writer, progress bool) (res *Result, err error) {
	origin := time.Now()
	clock := func() time.Duration { return time.Since(origin) }
	prefix := "bench-" + randomHex(6) + "-"
	l := newLedger(sp.healthy)

	var prof *profiles
	if sp.profile {
		if prof, err = createProfiles(o); err != nil {
			return nil, err
		}
		defer prof.close()
	}
	var t *target
	if !sp.direct {
		if len(o.Targets) > 0 {
			t, err = remoteTarget(ctx, o)
		} else {
			t, err = startGateway(ctx, o, stderr)
		}
		if err != nil {
			return nil, err
		}
		if progress {
			t.progress = stderr
		}
	}
	var healthy, bad []*receiver
	var idle *receiver
	defer func() {
		if terr := teardown(t, healthy, bad, idle); terr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", terr))
		}
	}()
	for i := range sp.healthy {
		r, err := startReceiver(o.ReceiverHost, kindHealthy, l, i, prefix, clock)
		if err != nil {
			return nil, err
		}
		healthy = append(healthy, r)
	}
	for i := range sp.bad {
		r, err := startReceiver(o.ReceiverHost, badKinds[i%len(badKinds)], nil, 0, prefix, clock)
		if err != nil {
			return nil, err
		}
		bad = append(bad, r)
	}
	if sp.idle > 0 {
		if idle, err = startReceiver(o.ReceiverHost, kindIdle, nil, 0, prefix, clock); err != nil {
			return nil, err
		}
	}

	g := &generator{
		client:      newClient(o.Concurrency),
		prefix:      prefix,
		concurrency: o.Concurrency,
		batch:       o.Batch,
		events:      int64(o.Events),
		duration:    o.Duration,
		rate:        o.Rate,
		ledger:      l,
		origin:      origin,
		statuses:    make(map[int]int64),
	}
	defer g.client.CloseIdleConnections()
	desc := "no gateway"
	if sp.direct {
		g.urls = []string{healthy[0].url}
	} else {
		for _, r := range slices.Concat(healthy, bad) {
			if err := t.subscribe(ctx, r.url); err != nil {
				return nil, err
			}
		}
		if sp.idle > 0 {
			if err := t.subscribeIdle(ctx, idle.url, sp.idle); err != nil {
				return nil, err
			}
		}
		ingest := t.ingest
		if len(ingest) == 0 {
			ingest = []string{t.base}
		}
		for _, b := range ingest {
			g.urls = append(g.urls, b+"/v1/events")
		}
		g.token, desc = t.ingestToken, t.desc
	}

	if err := prof.start(); err != nil {
		return nil, err
	}
	resetPeakRSS()
	cpu := cpuTime()
	g.start = g.clock()
	stopProgress := func() {}
	if progress {
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { showProgress(pctx, stderr, sp.name, g, l); close(done) }()
		stopProgress = func() { cancel(); <-done }
	}
	g.run(ctx)
	drained := drain(ctx, l, o.DrainTimeout)
	stopProgress()
	perr := prof.stop()

	tl := l.tally()
	g.mu.Lock()
	sendTime := g.lastAnswer - g.start
	statuses := make(map[string]int64, len(g.statuses))
	for code, n := range g.statuses {
		statuses[strconv.Itoa(code)] = n
	}
	firstError := g.firstError
	g.mu.Unlock()
	deliverTime := tl.last - g.start
	res = &Result{
		Name:             sp.name,
		Target:           desc,
		Subscriptions:    sp.healthy,
		BadSubscriptions: sp.bad,
		Concurrency:      o.Concurrency,
		Batch:            o.Batch,
		Rate:             o.Rate,
		Sent:             g.sent.Load(),
		Accepted:         g.accepted.Load(),
		Refused:          g.refused.Load(),
		Failed:           g.failed.Load(),
		Statuses:         statuses,
		FirstError:       firstError,
		SendSeconds:      seconds(sendTime),
		IngestPerSec:     perSecond(float64(g.accepted.Load()), sendTime),
		Deliveries:       tl.deliveries,
		DeliverSeconds:   seconds(max(deliverTime, 0)),
		DeliveredPerSec:  perSecond(float64(tl.deliveries)/float64(sp.healthy), deliverTime),
		DeliveriesPerSec: perSecond(float64(tl.deliveries), deliverTime),
		LatencyMs: Latency{
			P50: ms(percentile(tl.latency, 0.50)),
			P90: ms(percentile(tl.latency, 0.90)),
			P99: ms(percentile(tl.latency, 0.99)),
			Max: ms(percentile(tl.latency, 1)),
		},
		Lost:         tl.lost,
		Duplicates:   tl.duplicates,
		Foreign:      tl.foreign,
		Drained:      drained,
		Interrupted:  ctx.Err() != nil,
		PeakRSSBytes: peakRSS(),
		CPUSeconds:   seconds(cpuTime() - cpu),
	}
	for _, r := range bad {
		res.Bad = append(res.Bad, BadReceived{Kind: r.kind, Requests: r.requests.Load()})
	}
	if idle != nil {
		n := idle.requests.Load()
		res.IdleSubscriptions, res.IdleEventType, res.IdleRequests = sp.idle, idleEventType, &n
	}
	return res, perr
}

// drain waits until every accepted event has reached every healthy receiver, for at most
// limit, and reports whether they all did.
func drain(ctx context.Context, l *ledger, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for !l.complete() {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	return true
}

// teardown deletes the subscriptions, lets the bad receivers answer at once so that the
// gateway's rounds of attempts end, stops an in-process gateway, and stops the receivers.
func teardown(t *target, healthy, bad []*receiver, idle *receiver) error {
	var errs []error
	if t != nil {
		// 30s, and 10ms more for each idle subscription to delete.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+time.Duration(len(t.idle))*10*time.Millisecond)
		errs = append(errs, t.unsubscribe(ctx))
		cancel()
		t.client.CloseIdleConnections()
	}
	for _, r := range bad {
		r.release()
	}
	if t != nil && t.stop != nil {
		errs = append(errs, t.stop())
	}
	for _, r := range slices.Concat(healthy, bad) {
		errs = append(errs, r.close())
	}
	if idle != nil {
		errs = append(errs, idle.close())
	}
	return errors.Join(errs...)
}

// The isolation scenario's limits.
const (
	minRateRatio = 0.90
	minP99Limit  = 25 * time.Millisecond
)

// judge compares the run beside bad subscriptions with the run alone: the healthy subscription
// must keep 90% of its delivered rate, a p99 within max(2 x alone, 25ms), and lose nothing.
func judge(alone, withBad *Result) *Verdict {
	v := &Verdict{P99LimitMs: max(2*alone.LatencyMs.P99, ms(minP99Limit))}
	if alone.DeliveredPerSec > 0 {
		v.RateRatio = round3(withBad.DeliveredPerSec / alone.DeliveredPerSec)
	}
	v.RatePass = v.RateRatio >= minRateRatio
	v.P99Pass = withBad.Deliveries > 0 && withBad.LatencyMs.P99 <= v.P99LimitMs
	v.LostPass = alone.Lost == 0 && withBad.Lost == 0 && alone.Accepted > 0 && withBad.Accepted > 0
	v.Pass = v.RatePass && v.P99Pass && v.LostPass
	mark := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	v.Lines = []string{
		fmt.Sprintf("%s  delivered rate: %s events/s beside bad subscriptions, %.0f%% of %s alone (at least %.0f%%)",
			mark(v.RatePass), rate(withBad.DeliveredPerSec), v.RateRatio*100, rate(alone.DeliveredPerSec), minRateRatio*100),
		fmt.Sprintf("%s  p99 latency: %s beside bad subscriptions, limit %s (2 x %s alone, or %s)",
			mark(v.P99Pass), msText(withBad.LatencyMs.P99), msText(v.P99LimitMs), msText(alone.LatencyMs.P99), msText(ms(minP99Limit))),
		fmt.Sprintf("%s  lost: %s of %s accepted events beside bad subscriptions, %s of %s alone",
			mark(v.LostPass), count(withBad.Lost), count(withBad.Accepted), count(alone.Lost), count(alone.Accepted)),
		mark(v.Pass) + "  isolation",
	}
	return v
}

// round3 rounds x to three decimals.
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
