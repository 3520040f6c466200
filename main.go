// Command gateway is the webhook gateway: producers post events to it, and it delivers them,
// durably and with retries, to the webhooks subscribers register.
//
//	gateway serve [--config FILE]     run the gateway
//	gateway validate [--config FILE]  check the configuration
//	gateway version                   print the version
//	gateway bench [flags]             benchmark a gateway (see gateway bench --help)
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
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/webhookgw/gateway/bench"
	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/gateway"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/sqlite"
)

// defaultConfig is the shipped gateway.yaml, used when there is no file to read, so that
// running without one behaves as running with it (GATEWAY_ADMIN_TOKEN and all).
//
//go:embed gateway.yaml
var defaultConfig []byte

const usage = `usage: gateway <command> [flags]

commands:
  serve [--config FILE]     run the gateway
  validate [--config FILE]  check the configuration; print every problem, or ok
  version                   print the version
  bench [flags]             load benchmark: events/s, latency, lost events (bench --help)

--config defaults to $GATEWAY_CONFIG, then ./gateway.yaml.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		path, explicit, ok := configFlag("serve", args[1:], stderr)
		if !ok {
			return 2
		}
		if err := serve(path, explicit, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "gateway:", err)
			return 1
		}
		return 0
	case "validate":
		path, _, ok := configFlag("validate", args[1:], stderr)
		if !ok {
			return 2
		}
		if _, err := config.Load(path, builtin.Registry()); err != nil {
			fmt.Fprintln(stdout, err)
			return 1
		}
		fmt.Fprintln(stdout, "ok")
		return 0
	case "version":
		fmt.Fprintln(stdout, "webhook-gateway", gateway.Version)
		return 0
	case "bench":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return bench.Main(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "gateway: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// configFlag parses --config; explicit says whether the path was asked for rather than the
// ./gateway.yaml default.
func configFlag(name string, args []string, stderr io.Writer) (path string, explicit, ok bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&path, "config", "", "the configuration file (default $GATEWAY_CONFIG, then ./gateway.yaml)")
	if err := fs.Parse(args); err != nil {
		return "", false, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gateway %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", false, false
	}
	if path == "" {
		path = os.Getenv(config.EnvConfig)
	}
	if path != "" {
		return path, true, true
	}
	return "gateway.yaml", false, true
}

func serve(path string, explicit bool, stdout, stderr io.Writer) error {
	plugins := builtin.Registry()
	cfg, err := config.Load(path, plugins)
	usedDefault := false
	if !explicit && errors.Is(err, fs.ErrNotExist) {
		usedDefault = true
		cfg, err = config.Parse(defaultConfig, os.LookupEnv, plugins)
	}
	if err != nil {
		return err
	}
	log := newLogger(stdout, cfg.Telemetry.LogLevel)
	if usedDefault {
		log.Warn("no gateway.yaml here; running with the default configuration (the shipped gateway.yaml)")
	}
	if len(cfg.Admin.Tokens) == 0 {
		token := generateToken()
		cfg.Admin.Tokens = []string{token}
		fmt.Fprintf(stderr, "\nNo admin token is configured (admin.tokens), so this run made one. The management API\n"+
			"accepts it until the gateway stops; set GATEWAY_ADMIN_TOKEN for a token of your own.\n\n"+
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
		return err
	}
	defer func() {
		// Spans still buffered are sent before the process ends.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(flushCtx); err != nil {
			log.Warn("flushing spans", "err", err)
		}
	}()
	st, err := openStore(ctx, cfg.Store)
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Options{Config: cfg, Store: st, Plugins: plugins, Logger: log, TracerProvider: tp})
	if err != nil {
		return errors.Join(err, st.Close())
	}
	if _, err := gw.SyncSubscriptions(ctx, cfg); err != nil {
		return errors.Join(err, st.Close())
	}

	// SIGHUP reloads run beside the gateway and end with it, before the store closes.
	var reloads sync.WaitGroup
	reloads.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload(ctx, gw, cfg, path, explicit, log)
			}
		}
	})
	err = gw.Run(ctx)
	stop() // ends the reloads when Run ended on its own
	reloads.Wait()
	log.Info("stopped", "err", err)
	return errors.Join(err, st.Close())
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

func openStore(ctx context.Context, cfg config.Store) (store.Store, error) {
	switch cfg.Driver {
	case "sqlite":
		return sqlite.Open(ctx, cfg.DSN, sqlite.Options{Synchronous: cfg.Synchronous})
	}
	return nil, fmt.Errorf("store.driver %q is not available in this build", cfg.Driver)
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
