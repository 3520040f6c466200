// Command gateway is the webhook gateway: producers post events to it, and it delivers them,
// durably and with retries, to the webhooks subscribers register.
//
//	gateway serve [--config FILE]        run the gateway
//	gateway validate [--config FILE]     check the configuration (--check-store: and the store's files)
//	gateway version                      print the version (also gateway --version)
//	gateway healthcheck [--config FILE]  exit 0 if the gateway answers /readyz with 200
//	gateway bench [flags]                benchmark a gateway (see gateway bench --help)
//	gateway webhooks|events|deliveries|recover|test|listen ...
//	                                     everyday work against a running gateway (package cli)
//
// Every command takes -h and --help.
package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mattn/go-isatty"

	"github.com/webhookgw/gateway/bench"
	"github.com/webhookgw/gateway/cli"
	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/postgres"
	"github.com/webhookgw/gateway/store/sqlite"
)

// defaultConfig is the shipped gateway.yaml, used when there is no file to read, so that
// running without one behaves as running with it (GATEWAY_ADMIN_TOKEN and all).
//
//go:embed gateway.yaml
var defaultConfig []byte

const usage = `usage: gateway <command> [flags]

commands:
  serve [--config FILE]        run the gateway
  validate [--config FILE]     check the configuration; print every problem, or ok
    --check-store              also check the store: sqlite, the database's directory exists
                               and is writable, and no other gateway has the file open;
                               postgres, the database answers
  version                      print the version (also gateway --version)
  healthcheck [--config FILE]  exit 0 if the gateway answers /readyz with 200 (HEALTHCHECK)
  bench [flags]                load benchmark: events/s, latency, lost events

against a running gateway (--url or $GATEWAY_URL, --token or $GATEWAY_ADMIN_TOKEN):
` + cli.Usage + `
gateway <command> --help tells more about a command.
` + configHelp

// configHelp says how every command that reads the configuration finds it.
const configHelp = `
The configuration is --config FILE, else $GATEWAY_CONFIG, else ./gateway.yaml, else (when there
is no ./gateway.yaml) the built-in copy of the repository's gateway.yaml. GATEWAY_LISTEN
overrides listen.
`

const (
	serveHelp = `usage: gateway serve [--config FILE]

Runs the gateway until SIGINT or SIGTERM (exit 0); SIGHUP re-reads the file's subscriptions.
`
	validateHelp = `usage: gateway validate [--config FILE]

Checks the configuration as serve would load it: prints every problem with its YAML path and
exits 1, or prints ok and exits 0.
`
	versionHelp = `usage: gateway version

Prints the version (gateway --version does too).
`
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code. Errors are printed once, on stderr,
// with one "gateway: " in front; serve's errors after its logger exists are logged instead.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		src, code, done := configFlag("serve", serveHelp, args[1:], stdout, stderr)
		if done {
			return code
		}
		err := serve(src, stdout, stderr)
		var logged loggedError
		switch {
		case errors.As(err, &logged):
			return 1 // the log has said why
		case err != nil:
			fmt.Fprintln(stderr, "gateway:", err)
			return 1
		}
		return 0
	case "validate":
		var checkStore bool
		src, code, done := configFlag("validate", validateHelp, args[1:], stdout, stderr, func(fs *flag.FlagSet) {
			fs.BoolVar(&checkStore, "check-store", false, "also check that the store can be opened: for sqlite, the database's directory exists and is writable, and no other gateway has the file open; for postgres, the database answers")
		})
		if done {
			return code
		}
		cfg, fallback, err := src.load(builtin.Registry())
		if fallback {
			fmt.Fprintln(stderr, "No ./gateway.yaml here: checked the built-in configuration, which serve runs with.")
		}
		var ps config.Problems
		switch {
		case errors.As(err, &ps):
			fmt.Fprintln(stdout, ps) // the result: one problem a line
			return 1
		case err != nil:
			fmt.Fprintln(stderr, "gateway:", err)
			return 1
		}
		if checkStore {
			if err := checkStoreAccess(cfg.Store); err != nil {
				fmt.Fprintln(stdout, err)
				return 1
			}
		}
		fmt.Fprintln(stdout, "ok")
		return 0
	case "healthcheck":
		src, code, done := configFlag("healthcheck", healthcheckHelp, args[1:], stdout, stderr)
		if done {
			return code
		}
		if err := healthcheck(src, healthcheckTimeout); err != nil {
			fmt.Fprintln(stderr, "gateway: healthcheck:", err)
			return 1
		}
		fmt.Fprintln(stdout, "ok")
		return 0
	case "version", "--version", "-version":
		if args[0] == "version" {
			fs := flag.NewFlagSet("version", flag.ContinueOnError)
			if code, done := parseFlags(fs, versionHelp, args[1:], stdout, stderr); done {
				return code
			}
		}
		fmt.Fprintln(stdout, "webhook-gateway", gateway.Version)
		return 0
	case "bench":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return bench.Main(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if slices.Contains(cli.Commands, args[0]) {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		p := &cli.Program{Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, Version: gateway.Version}
		return p.Main(ctx, args)
	}
	fmt.Fprintf(stderr, "gateway: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// parseFlags parses a command's flags; it allows no arguments. -h or --help prints help and
// the flags on stdout: done, exit 0. A bad flag or an argument is reported on stderr, with the
// same help: done, exit 2.
func parseFlags(fs *flag.FlagSet, help string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard) // the flag package's own reports would come without "gateway: "
	fs.Usage = func() {}
	printHelp := func(w io.Writer) {
		fmt.Fprint(w, help)
		if hasFlags(fs) {
			fmt.Fprintln(w, "\nflags:")
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		printHelp(stdout)
		return 0, true
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %s: %v\n\n", fs.Name(), err)
		printHelp(stderr)
		return 2, true
	}
	return 0, false
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// configSource is where a command finds the configuration: path, named by --config or
// $GATEWAY_CONFIG, or the ./gateway.yaml default, which falls back to the built-in copy.
type configSource struct {
	path  string
	named bool // --config or $GATEWAY_CONFIG: it must exist
}

// configFlag parses the flags of a command that reads the configuration (--config), and those
// that more defines.
func configFlag(name, help string, args []string, stdout, stderr io.Writer, more ...func(*flag.FlagSet)) (src configSource, code int, done bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&src.path, "config", "", "the configuration `FILE` (default $GATEWAY_CONFIG, then ./gateway.yaml, then the built-in one)")
	for _, define := range more {
		define(fs)
	}
	if code, done := parseFlags(fs, help+configHelp, args, stdout, stderr); done {
		return src, code, true
	}
	if src.path == "" {
		src.path = os.Getenv(config.EnvConfig)
	}
	if src.path != "" {
		src.named = true
		return src, 0, false
	}
	src.path = "gateway.yaml"
	return src, 0, false
}

// load loads the configuration from src, the same way for every command: the file, or, when
// the ./gateway.yaml default does not exist, the built-in copy of the repository's
// gateway.yaml (fallback is then true).
func (src configSource) load(reg *plugins.Registry) (cfg *config.Config, fallback bool, err error) {
	cfg, err = config.Load(src.path, reg)
	if !src.named && errors.Is(err, fs.ErrNotExist) {
		cfg, err = config.Parse(defaultConfig, os.LookupEnv, reg)
		if err != nil {
			return nil, true, fmt.Errorf("the built-in configuration (no ./gateway.yaml here): %w", err)
		}
		return cfg, true, nil
	}
	return cfg, false, err
}

// loggedError is an error serve has logged already, which run does not print again.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

func serve(src configSource, stdout, stderr io.Writer) error {
	plugins := builtin.Registry()
	cfg, usedDefault, err := src.load(plugins)
	if err != nil {
		return err
	}
	log := newLogger(stdout, cfg.Telemetry.LogLevel)
	// From here on a failure is logged, once, at ERROR, and not printed again.
	failed := func(msg string, err error) error {
		log.Error(msg, "err", err.Error())
		return loggedError{err}
	}
	if usedDefault {
		log.Warn("no ./gateway.yaml here; running with the built-in default configuration (the repository's gateway.yaml)")
	}
	if len(cfg.Admin.Tokens) == 0 {
		token := generateToken()
		cfg.Admin.Tokens = []string{token}
		fmt.Fprintf(stderr, "\nNo admin token is configured (admin.tokens), so this run made one. The management API\n"+
			"accepts it until the gateway stops. For a token of your own, list it in admin.tokens (the\n"+
			"shipped gateway.yaml takes GATEWAY_ADMIN_TOKEN).\n\n"+
			"    Authorization: Bearer %s\n\n", token)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Caught from here on: SIGHUP's default action would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	tp, stopTracing, err := gateway.NewTracerProvider(ctx, cfg.Telemetry, stdout)
	if err != nil {
		return failed("start failed", err)
	}
	log.Info("traces", gateway.TracesDestination(cfg.Telemetry)...)
	defer func() {
		// Spans still buffered are sent before the process ends.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(flushCtx); err != nil {
			log.Warn("flushing spans", "err", err)
		}
	}()
	st, err := openStore(ctx, cfg.Store, log)
	if err != nil {
		return failed("start failed", err)
	}
	gw, err := gateway.New(gateway.Options{Config: cfg, Store: st, Plugins: plugins, Logger: log, TracerProvider: tp})
	if err != nil {
		return failed("start failed", errors.Join(err, st.Close()))
	}
	if _, err := gw.SyncSubscriptions(ctx, cfg); err != nil {
		return failed("start failed", errors.Join(err, st.Close()))
	}

	// SIGHUP reloads run beside the gateway and end with it, before the store closes.
	var reloads sync.WaitGroup
	reloads.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload(ctx, gw, cfg, src.path, src.named, log)
			}
		}
	})
	err = gw.Run(ctx)
	stop() // ends the reloads when Run ended on its own
	reloads.Wait()
	if err := errors.Join(err, st.Close()); err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "listen" {
			return failed("start failed", err)
		}
		return failed("stopped", err)
	}
	log.Info("stopped")
	return nil
}

// reload syncs the file's subscriptions again, checked against the rules the gateway runs with
// (events.types, security), which, like the rest of the file, change only at a restart.
func reload(ctx context.Context, gw *gateway.Gateway, running *config.Config, path string, explicit bool, log *slog.Logger) {
	if !explicit {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			log.Warn("SIGHUP: no gateway.yaml to reload", "config", path)
			return
		}
	}
	loaded, err := config.Load(path, builtin.Registry())
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded", "config", path, "err", err.Error())
		return
	}
	next := *running
	next.Subscriptions = loaded.Subscriptions
	if err := next.Validate(builtin.Registry()); err != nil {
		log.Error("SIGHUP: subscriptions not reloaded: they break the rules the gateway runs with", "err", err.Error())
		return
	}
	loaded.Subscriptions, loaded.Admin.Tokens = nil, nil
	same := *running
	same.Subscriptions, same.Admin.Tokens = nil, nil
	if !reflect.DeepEqual(&same, loaded) {
		log.Warn("SIGHUP: settings other than subscriptions changed; they apply at the next start")
	}
	if _, err := gw.SyncSubscriptions(ctx, &next); err != nil {
		log.Error("SIGHUP: subscriptions not synced", "err", err)
		return
	}
	log.Info("SIGHUP: subscriptions reloaded; other settings apply at the next start", "config", path)
}

func openStore(ctx context.Context, cfg config.Store, log *slog.Logger) (store.Store, error) {
	secrets, err := cfg.SecretBox() // validated
	if err != nil {
		return nil, err
	}
	if secrets.Current() == "" {
		log.Warn("stored secrets are not encrypted: registration passwords and plugin secrets are stored in clear; " +
			"set store.encryption_key (GATEWAY_ENCRYPTION_KEY in the shipped gateway.yaml) to a key made with: openssl rand -base64 32")
	}
	switch cfg.Driver {
	case "sqlite":
		return sqlite.Open(ctx, cfg.DSN, sqlite.Options{Synchronous: cfg.Synchronous, Secrets: secrets, Logger: log})
	case "postgres":
		return postgres.Open(ctx, cfg.DSN, postgres.Options{MaxConns: int32(cfg.MaxConns), Secrets: secrets, Logger: log}) // validated: fits
	}
	return nil, fmt.Errorf("store.driver %q is not available in this build", cfg.Driver)
}

// checkStoreAccess is validate --check-store: what openStore needs of the machine, checked
// without opening the store.
func checkStoreAccess(cfg config.Store) error {
	switch cfg.Driver {
	case "sqlite":
		return sqlite.Check(cfg.DSN)
	case "postgres":
		return checkPostgres(cfg.DSN)
	}
	return fmt.Errorf("store.driver %q is not available in this build", cfg.Driver)
}

// checkPostgres connects to the database dsn names and pings it, within 10 seconds. It changes
// nothing.
func checkPostgres(dsn string) error {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("store.dsn: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// newLogger logs JSON at level, or text when w is a terminal.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level)) // validated: debug, info, warn or error
	opts := &slog.HandlerOptions{Level: l}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func generateToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return "gw_" + hex.EncodeToString(b)
}
