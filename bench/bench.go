// Package bench is gateway bench, a load benchmark of the webhook gateway in the spirit of
// nats bench and pgbench.
//
// A run starts subscribers on loopback (net/http servers of their own), registers them as
// webhooks through the management API of a gateway (started in this process on a temporary
// SQLite file, or a running one), posts events to POST /v1/events over keep-alive HTTP
// connections, and waits until every event the gateway accepted has reached every healthy
// subscriber. Nothing takes a shortcut inside the process: every event crosses loopback HTTP
// twice, so the figures compare with those of an external load generator.
//
// Each event carries its id and its send time; a subscriber takes the latency as its receipt
// time minus the send time, on this process's monotonic clock. A run reports events accepted,
// ingest and delivery rates, latency percentiles, lost and duplicate events, the process's peak
// RSS and CPU time.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mattn/go-isatty"
)

// Main runs gateway bench with args (the flags after "bench") and returns the exit code: 0
// when the runs completed (whatever they found; the isolation verdict is printed), 1 when one
// could not be run or was interrupted, 2 for bad flags. ctx ending interrupts the run, which
// still prints what it has.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stdout, stderr)
	var ferr flagError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ferr):
		return 2 // parseOptions has said why
	case err != nil:
		fmt.Fprintln(stderr, "gateway: bench:", err)
		return 2
	}
	f, ok := stderr.(*os.File)
	progress := ok && isatty.IsTerminal(f.Fd())
	rep, err := run(ctx, o, stderr, progress)
	if len(rep.Runs) > 0 {
		if o.JSON {
			if werr := rep.writeJSON(stdout); werr != nil {
				err = errors.Join(err, werr)
			}
		} else {
			rep.writeText(stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "gateway: bench:", err)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "gateway: bench: interrupted")
		return 1
	}
	return 0
}

// run runs o's scenario. The report holds the runs that completed, even with an error.
func run(ctx context.Context, o *Options, stderr io.Writer, progress bool) (*Report, error) {
	rep := &Report{Scenario: o.Scenario}
	one := func(sp runSpec) (*Result, error) {
		res, err := runOne(ctx, o, sp, stderr, progress)
		if res != nil {
			rep.Runs = append(rep.Runs, res)
		}
		if err != nil {
			return nil, fmt.Errorf("%s run: %w", sp.name, err)
		}
		return res, nil
	}
	switch o.Scenario {
	case ScenarioDirect:
		_, err := one(runSpec{name: "direct", direct: true, healthy: 1})
		return rep, err

	case ScenarioIsolation:
		alone, err := one(runSpec{name: "alone", healthy: 1, idle: o.IdleSubscriptions})
		if err != nil || alone.Interrupted {
			return rep, err
		}
		withBad, err := one(runSpec{name: "with_bad", healthy: 1, bad: len(badKinds), idle: o.IdleSubscriptions})
		if err != nil || withBad.Interrupted {
			return rep, err
		}
		rep.Verdict = judge(alone, withBad)
		return rep, nil

	default:
		gw, err := one(runSpec{name: "gateway", healthy: o.Subscriptions, bad: o.BadSubscriptions,
			idle: o.IdleSubscriptions, profile: true})
		if err != nil || gw.Interrupted || !o.CompareDirect {
			return rep, err
		}
		direct, err := one(runSpec{name: "direct", direct: true, healthy: 1})
		if err != nil || direct.Interrupted {
			return rep, err
		}
		if direct.DeliveredPerSec > 0 {
			rep.VsDirect = round3(gw.DeliveredPerSec / direct.DeliveredPerSec)
		}
		return rep, nil
	}
}
