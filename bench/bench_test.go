package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runMain runs Main with args and --json, and returns the exit code, the decoded report and
// stderr.
func runMain(t *testing.T, args ...string) (int, *Report, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), append(args, "--json"), &stdout, &stderr)
	var rep Report
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("stdout is not a report: %v\n%s", err, stdout.String())
		}
	}
	return code, &rep, stderr.String()
}

func TestThroughput(t *testing.T) {
	t.Parallel()
	code, rep, stderr := runMain(t, "--events", "300", "--subscriptions", "2", "--concurrency", "4", "--drain-timeout", "30s")
	if code != 0 || len(rep.Runs) != 1 {
		t.Fatalf("exit %d, %d runs; stderr:\n%s", code, len(rep.Runs), stderr)
	}
	r := rep.Runs[0]
	if r.Sent != 300 || r.Accepted != 300 || r.Refused != 0 || r.Failed != 0 {
		t.Errorf("sent %d, accepted %d, refused %d, failed %d; want 300 sent and accepted (first error %q)",
			r.Sent, r.Accepted, r.Refused, r.Failed, r.FirstError)
	}
	if r.Deliveries != 600 || r.Lost != 0 || r.Duplicates != 0 || r.Foreign != 0 || !r.Drained {
		t.Errorf("deliveries %d, lost %d, duplicates %d, foreign %d, drained %v; want 600, 0, 0, 0, true",
			r.Deliveries, r.Lost, r.Duplicates, r.Foreign, r.Drained)
	}
	l := r.LatencyMs
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("latency percentiles out of order: %+v", l)
	}
	if r.IngestPerSec <= 0 || r.DeliveredPerSec <= 0 || r.DeliveriesPerSec < r.DeliveredPerSec {
		t.Errorf("ingest %v/s, delivered %v/s, deliveries %v/s", r.IngestPerSec, r.DeliveredPerSec, r.DeliveriesPerSec)
	}
	if !strings.HasPrefix(r.Target, "in-process") || r.Subscriptions != 2 {
		t.Errorf("target %q with %d subscriptions", r.Target, r.Subscriptions)
	}
}

func TestIdleSubscriptions(t *testing.T) {
	t.Parallel()
	args := []string{"--events", "200", "--concurrency", "4", "--idle-subscriptions", "50", "--drain-timeout", "30s"}
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	profiling := flag.Lookup("test.cpuprofile").Value.String() == "" // one CPU profile at a time
	if profiling {
		args = append(args, "--cpuprofile", cpu, "--memprofile", mem)
	}
	code, rep, stderr := runMain(t, args...)
	if code != 0 || len(rep.Runs) != 1 {
		t.Fatalf("exit %d, %d runs; stderr:\n%s", code, len(rep.Runs), stderr)
	}
	r := rep.Runs[0]
	if r.Accepted != 200 || r.Deliveries != r.Accepted || r.Lost != 0 || !r.Drained {
		t.Errorf("accepted %d, delivered %d, lost %d, drained %v; want 200, 200, 0, true",
			r.Accepted, r.Deliveries, r.Lost, r.Drained)
	}
	switch {
	case r.IdleSubscriptions != 50 || r.IdleEventType != idleEventType || r.IdleRequests == nil:
		t.Errorf("%d idle subscriptions to %q, requests %v; want 50 to %q, counted",
			r.IdleSubscriptions, r.IdleEventType, r.IdleRequests, idleEventType)
	case *r.IdleRequests != 0:
		t.Errorf("the idle subscriptions got %d requests; want none", *r.IdleRequests)
	}
	if !profiling {
		return
	}
	for _, f := range []string{cpu, mem} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v, %v", f, fi, err)
		}
	}
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	// Few enough events that the bad subscriptions' rounds do not fill the gateway's workers:
	// this checks the scenario runs and loses nothing, not the gateway's isolation.
	code, rep, stderr := runMain(t, "--scenario", "isolation", "--duration", "1s", "--rate", "10", "--drain-timeout", "30s")
	if code != 0 || len(rep.Runs) != 2 || rep.Verdict == nil {
		t.Fatalf("exit %d, %d runs, verdict %v; stderr:\n%s", code, len(rep.Runs), rep.Verdict, stderr)
	}
	for _, r := range rep.Runs {
		if r.Accepted != 10 || r.Lost != 0 || r.Deliveries != 10 || !r.Drained {
			t.Errorf("%s: accepted %d, delivered %d, lost %d, drained %v; want 10, 10, 0, true",
				r.Name, r.Accepted, r.Deliveries, r.Lost, r.Drained)
		}
	}
	if b := rep.Runs[1]; b.Name != "with_bad" || len(b.Bad) != 4 {
		t.Errorf("second run %q with bad receivers %+v; want with_bad and four", b.Name, b.Bad)
	}
	if !rep.Verdict.LostPass || len(rep.Verdict.Lines) != 4 {
		t.Errorf("verdict %+v", rep.Verdict)
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"--help"}, 0, "usage: gateway bench", ""},
		{[]string{"-h"}, 0, "--rate", ""},
		{[]string{"--store", "postgres"}, 2, "", "needs --dsn"},
		{[]string{"--nope"}, 2, "", "flag provided but not defined"},
		{[]string{"--events", "5", "--duration", "1s"}, 2, "", "not both"},
		{[]string{"--batch", "1001"}, 2, "", "--batch"},
		{[]string{"--target", "http://127.0.0.1:1", "--token", ""}, 2, "", "--token"},
		{[]string{"--idle-subscriptions", "-1"}, 2, "", "--idle-subscriptions"},
		{[]string{"--target", "http://127.0.0.1:1", "--token", "x", "--cpuprofile", "cpu.pprof"}, 2, "", "in-process"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv("GATEWAY_ADMIN_TOKEN", "")
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.9, 90}, {0.99, 99}, {1, 100}, {0, 1}} {
		if got := percentile(d, tc.q); got != tc.want {
			t.Errorf("percentile(1..100, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v", got)
	}
	if got := percentile(d[:1], 0.99); got != 1 {
		t.Errorf("percentile of one = %v", got)
	}
}

func TestLedgerReceiptBeforeAccept(t *testing.T) {
	l := newLedger(2)
	l.receive(0, 3, 0, 5) // delivered before the producer read its 202
	l.accept(0, 4)
	l.receive(1, 3, 0, 5)
	l.receive(1, 3, 0, 6)
	if l.complete() {
		t.Fatal("complete with events 0 to 2 missing")
	}
	for e := int64(0); e < 3; e++ {
		l.receive(0, e, 0, 1)
		l.receive(1, e, 0, 1)
	}
	if !l.complete() {
		t.Fatal("not complete")
	}
	if tl := l.tally(); tl.accepted != 4 || tl.deliveries != 8 || tl.lost != 0 || tl.duplicates != 1 {
		t.Errorf("tally %+v", tl)
	}
}
