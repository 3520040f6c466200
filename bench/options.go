package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
)

// Scenarios are the values of --scenario.
const (
	ScenarioThroughput = "throughput"
	ScenarioIsolation  = "isolation"
	ScenarioDirect     = "direct"
)

// Options are the command's flags.
type Options struct {
	Scenario string

	// Store and DSN select the in-process gateway's store: sqlite, on a temporary file when DSN
	// is empty, or postgres, in a fresh schema of the database DSN names, dropped at the end.
	Store       string
	DSN         string
	Synchronous string
	Tracing     bool
	LogLevel    string

	// Targets, when set, are running gateways' base URLs (replicas sharing one store): events
	// are posted to them in turn, and subscriptions registered through the first. Token is their
	// admin token and IngestToken the bearer token for POST /v1/events, if they need one.
	Targets     []string
	Token       string
	IngestToken string
	// ReceiverHost is the address the receivers listen on and the gateway posts to.
	ReceiverHost string

	Subscriptions    int
	BadSubscriptions int
	// IdleSubscriptions are subscriptions to an event type the load never posts, registered
	// beside the others on every run with a gateway.
	IdleSubscriptions int
	// Events is how many events to send; when Duration is set instead, sending stops then.
	Events      int
	Duration    time.Duration
	Concurrency int
	Batch       int
	// Rate, when above zero, makes the load an open loop at this many events per second.
	Rate          float64
	DrainTimeout  time.Duration
	CompareDirect bool
	JSON          bool

	// CPUProfile and MemProfile, when set, are files for a CPU profile of the gateway run's
	// send and drain, and for a heap profile at its end.
	CPUProfile string
	MemProfile string
}

const help = `usage: gateway bench [flags]

Posts events to a webhook gateway over loopback HTTP, receives them on local subscribers, and
reports ingest and delivery rates, end-to-end latency, lost and duplicate events, peak RSS and CPU.

By default it starts a gateway in this process, on a temporary SQLite file, or with --store postgres
on PostgreSQL, in a fresh schema of the --dsn database that it drops at the end. --target
benchmarks a running gateway instead; given more than once (or as a comma-separated list), several
replicas of one gateway: the posts go to each in turn, and the subscriptions are registered through
the first. The load is a closed loop (each connection posts as soon as its previous post
is answered) unless --rate makes it an open loop at a fixed rate. Latency is measured from the send
to the receipt by a subscriber, on this process's clock; with --rate it counts from when each send
was due, so a send made late because every connection was busy counts its wait (no coordinated
omission). Every event accepted (202) must reach every healthy subscription: the run waits for that,
up to --drain-timeout, and reports the rest as lost.

Scenarios:
  throughput  the load the flags describe (the default)
  isolation   two runs, each on a fresh in-process gateway: one healthy subscription at --rate
              (default 300) for --duration (default 20s) alone, then beside four bad ones (never
              answers, 500, 429 with Retry-After: 1, 200 after 3s). PASS when the healthy one keeps
              at least 90% of its delivered rate, its p99 stays within max(2 x alone, 25ms), and it
              loses nothing
  direct      the load generator posting straight to a receiver, no gateway: the loop's own ceiling

Flags:
`

// flagError is a flag the flag package refused, and has already reported.
type flagError struct{ error }

// parseOptions parses args. It returns flag.ErrHelp after printing the usage for -h.
func parseOptions(args []string, stdout, stderr io.Writer) (*Options, error) {
	o := &Options{}
	fs := flag.NewFlagSet("gateway bench", flag.ContinueOnError)
	fs.StringVar(&o.Scenario, "scenario", ScenarioThroughput, "throughput, isolation or direct")
	fs.StringVar(&o.Store, "store", "sqlite", "the in-process gateway's store: sqlite or postgres")
	fs.StringVar(&o.DSN, "dsn", "", "the store's DSN (sqlite: a file path, kept after the run; default: a temporary file. postgres: a URL such as postgres://user@host:5432/db, required; the run uses a fresh schema, dropped at the end)")
	fs.StringVar(&o.Synchronous, "synchronous", "normal", "sqlite durability: normal or full")
	fs.BoolVar(&o.Tracing, "tracing", false, "trace every request and attempt in the in-process gateway (spans exported to nowhere, or over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)")
	fs.StringVar(&o.LogLevel, "log-level", "off", "the in-process gateway's log level on stderr: off, error, warn, info or debug")
	fs.Func("target", "a running gateway's base URL, such as http://127.0.0.1:8080, instead of an in-process one; repeat it (or give a comma-separated list) for replicas sharing one store: posts go to each in turn", func(v string) error {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				o.Targets = append(o.Targets, t)
			}
		}
		return nil
	})
	fs.StringVar(&o.Token, "token", "", "the target's admin token (default $GATEWAY_ADMIN_TOKEN)")
	fs.StringVar(&o.IngestToken, "ingest-token", "", "the target's ingest token, when it needs one")
	fs.StringVar(&o.ReceiverHost, "receiver-host", "127.0.0.1", "the address the subscribers listen on, as the gateway reaches it")
	fs.IntVar(&o.Subscriptions, "subscriptions", 1, "healthy subscriptions; each receives every event")
	fs.IntVar(&o.BadSubscriptions, "bad-subscriptions", 0, "bad subscriptions beside them, cycling through: never answers, 500, 429, 3s to answer")
	fs.IntVar(&o.IdleSubscriptions, "idle-subscriptions", 0, "subscriptions to "+idleEventType+", a type the load never posts: they match no event and must receive nothing (registered 16 at a time; deleted at the end only from a --target)")
	fs.IntVar(&o.Events, "events", 10000, "events to send (ignored when --duration is given)")
	fs.DurationVar(&o.Duration, "duration", 0, "send for this long instead of a number of events")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "connections posting events")
	fs.IntVar(&o.Batch, "batch", 1, "events per request (a JSON array when more than 1; at most 1000)")
	fs.Float64Var(&o.Rate, "rate", 0, "events per second in total, sent on schedule (open loop); 0 sends as fast as answers come")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 60*time.Second, "how long to wait, after sending, for accepted events to arrive")
	fs.BoolVar(&o.CompareDirect, "compare-direct", false, "throughput: also run the direct scenario with the same load, and compare")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object instead of text")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile (runtime/pprof) of the throughput run's send and drain to this file, for go tool pprof -top bin/gateway FILE; in-process gateway only, and of the whole process: load generator and receivers too")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write a heap profile to this file when the throughput run has drained; in-process gateway only, and of the whole process")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), help)
		fs.PrintDefaults()
	}
	fs.SetOutput(io.Discard) // a bad flag is reported below, with "gateway: bench: " in front
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fs.SetOutput(stdout) // asked for: not an error
			break
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		fmt.Fprintf(stderr, "gateway: bench: %v\n\n", err)
		fs.SetOutput(stderr)
		fs.Usage()
		return nil, flagError{err}
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["token"] {
		o.Token = os.Getenv("GATEWAY_ADMIN_TOKEN") // not the flag's default: --help would show it
	}
	if o.Scenario == ScenarioIsolation {
		// The isolation scenario's own defaults: a fixed rate, for a while.
		if !set["rate"] {
			o.Rate = 300
		}
		if !set["duration"] && !set["events"] {
			o.Duration = 20 * time.Second
		}
	}
	if set["events"] && set["duration"] {
		return nil, errors.New("give --events or --duration, not both")
	}
	return o, o.check()
}

// check reports the first option that makes no sense.
func (o *Options) check() error {
	switch o.Scenario {
	case ScenarioThroughput, ScenarioIsolation, ScenarioDirect:
	default:
		return fmt.Errorf("--scenario must be throughput, isolation or direct, not %q", o.Scenario)
	}
	switch o.Store {
	case "sqlite":
	case "postgres":
		if o.DSN == "" && len(o.Targets) == 0 {
			return errors.New("--store postgres needs --dsn, a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/postgres")
		}
	default:
		return fmt.Errorf("--store must be sqlite or postgres, not %q", o.Store)
	}
	if o.Synchronous != "normal" && o.Synchronous != "full" {
		return fmt.Errorf("--synchronous must be normal or full, not %q", o.Synchronous)
	}
	switch o.LogLevel {
	case "off", "error", "warn", "info", "debug":
	default:
		return fmt.Errorf("--log-level must be off, error, warn, info or debug, not %q", o.LogLevel)
	}
	for _, target := range o.Targets {
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--target must be an http:// or https:// base URL, not %q", target)
		}
	}
	if len(o.Targets) > 0 {
		if o.Token == "" && o.Scenario != ScenarioDirect {
			return errors.New("--target needs --token (or GATEWAY_ADMIN_TOKEN): subscriptions are registered through the management API")
		}
	}
	switch {
	case o.Subscriptions < 1:
		return errors.New("--subscriptions must be at least 1")
	case o.BadSubscriptions < 0:
		return errors.New("--bad-subscriptions must not be negative")
	case o.IdleSubscriptions < 0:
		return errors.New("--idle-subscriptions must not be negative")
	case o.IdleSubscriptions > 0 && o.Scenario == ScenarioDirect:
		return errors.New("--idle-subscriptions needs a gateway: not with --scenario direct")
	case o.Duration == 0 && o.Events < 1:
		return errors.New("--events must be at least 1")
	case o.Duration < 0:
		return errors.New("--duration must not be negative")
	case o.Concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case o.Batch < 1 || o.Batch > 1000:
		return errors.New("--batch must be between 1 and 1000")
	case o.Rate < 0:
		return errors.New("--rate must not be negative")
	case o.DrainTimeout <= 0:
		return errors.New("--drain-timeout must be more than 0")
	}
	return o.checkProfiles()
}

// checkProfiles reports --cpuprofile or --memprofile without a run to profile: they profile
// the throughput scenario's gateway run, with the gateway in this process.
func (o *Options) checkProfiles() error {
	if o.CPUProfile == "" && o.MemProfile == "" {
		return nil
	}
	switch {
	case len(o.Targets) > 0:
		return errors.New("--cpuprofile and --memprofile profile the in-process gateway: not with --target")
	case o.Scenario != ScenarioThroughput:
		return errors.New("--cpuprofile and --memprofile profile the throughput scenario's gateway run: not with --scenario " + o.Scenario)
	}
	return nil
}
