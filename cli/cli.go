// Package cli is the gateway's command line for everyday work against a running gateway:
// webhooks, events send, deliveries, recover and test talk to its management and ingest APIs,
// and listen relays a temporary webhook's deliveries to a server on this machine.
//
// Every command prints a table when stdout is a terminal and the API's JSON answer otherwise
// (or with --json), reports errors on stderr, and exits with one of the Exit codes.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
)

// The exit codes of every command; scripts may rely on them.
const (
	ExitOK          = 0   // success
	ExitAPI         = 1   // the gateway answered an error (4xx or 5xx); its problem is on stderr
	ExitUsage       = 2   // bad flags or arguments
	ExitUnreachable = 3   // the gateway could not be reached (or did not answer in time)
	ExitTestFailed  = 4   // gateway test: the target's answer was not 2xx, or it was not reached
	ExitInterrupted = 130 // SIGINT or SIGTERM ended a request
)

// Environment variables the commands read.
const (
	EnvURL         = "GATEWAY_URL"
	EnvAdminToken  = "GATEWAY_ADMIN_TOKEN"
	EnvIngestURL   = "GATEWAY_INGEST_URL"
	EnvIngestToken = "GATEWAY_INGEST_TOKEN"
)

// DefaultURL is the gateway asked when neither --url nor GATEWAY_URL names one.
const DefaultURL = "http://127.0.0.1:8080"

// Commands are the command names Main runs; the binary's main dispatches them here.
var Commands = []string{"webhooks", "events", "deliveries", "recover", "test", "listen"}

// Usage is the commands' part of the binary's usage.
const Usage = `  webhooks list|get|create|delete  the subscriptions (dialect 1 view)
  events send [FILE]           post an event, or an array of them, from FILE or stdin
  deliveries list|get|retry    deliveries across subscriptions; one with its attempts; retry one
  recover SUB --since D        schedule again the failed deliveries of SUB in a window
  test SUB [--type T]          send SUB a sample event now and show the attempt
  listen --forward URL         relay a temporary webhook's deliveries to a local server
`

// exitHelp ends every command's help.
const exitHelp = `
Exit codes: 0 success; 1 the gateway answered an error (its problem on stderr); 2 bad flags or
arguments; 3 the gateway could not be reached; 130 interrupted.
`

// connHelp says how every command finds the gateway and what it prints.
const connHelp = `
The gateway is --url, else $GATEWAY_URL, else ` + DefaultURL + `; the admin token --token, else
$GATEWAY_ADMIN_TOKEN. Output is a table when stdout is a terminal, else (or with --json) the
API's JSON answer, one line.
`

// Program is the command line's view of its process: streams, environment and version.
type Program struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Version        string // sent in the User-Agent
}

// Main runs the command args names (args[0] is one of Commands) and returns its exit code.
// ctx ends the command early: listen deletes its webhook then and exits 0.
func (p *Program) Main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(p.Stderr, "usage: gateway <command> ...\n\n"+Usage)
		return ExitUsage
	}
	type sub = func(context.Context, []string) int
	groups := map[string]struct {
		help string
		subs map[string]sub
	}{
		"webhooks":   {webhooksHelp, map[string]sub{"list": p.webhooksList, "get": p.webhooksGet, "create": p.webhooksCreate, "delete": p.webhooksDelete}},
		"events":     {eventsHelp, map[string]sub{"send": p.eventsSend}},
		"deliveries": {deliveriesHelp, map[string]sub{"list": p.deliveriesList, "get": p.deliveriesGet, "retry": p.deliveriesRetry}},
	}
	switch args[0] {
	case "recover":
		return p.recover(ctx, args[1:])
	case "test":
		return p.test(ctx, args[1:])
	case "listen":
		return p.listen(ctx, args[1:])
	}
	g, ok := groups[args[0]]
	if !ok {
		fmt.Fprintf(p.Stderr, "gateway: unknown command %q\n", args[0])
		return ExitUsage
	}
	if len(args) < 2 {
		fmt.Fprintf(p.Stderr, "gateway: %s: which one?\n\n%s", args[0], g.help+exitHelp)
		return ExitUsage
	}
	switch args[1] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(p.Stdout, g.help+exitHelp)
		return ExitOK
	}
	run, ok := g.subs[args[1]]
	if !ok {
		fmt.Fprintf(p.Stderr, "gateway: %s: unknown command %q\n\n%s", args[0], args[1], g.help+exitHelp)
		return ExitUsage
	}
	return run(ctx, args[2:])
}

// session is one command's run: its flags, its connection to the gateway and its output.
type session struct {
	p       *Program
	fs      *flag.FlagSet
	help    string
	base    *url.URL
	token   string
	json    bool
	timeout time.Duration
	args    []string // the positional arguments
	client  *http.Client

	rawURL string
}

// newSession starts a command: its flag set with the connection and output flags. urlFlag
// names the flag that sets the gateway's address ("url", or "gateway" where --url means
// something else).
func (p *Program) newSession(name, help, urlFlag string) *session {
	s := &session{p: p, fs: flag.NewFlagSet(name, flag.ContinueOnError), help: help}
	s.fs.StringVar(&s.rawURL, urlFlag, "", "the gateway's `URL` (default $"+EnvURL+", else "+DefaultURL+")")
	if urlFlag != "gateway" {
		s.fs.StringVar(&s.rawURL, "gateway", "", "the same as --"+urlFlag)
	}
	s.fs.StringVar(&s.token, "token", "", "the admin `TOKEN` (default $"+EnvAdminToken+")")
	s.fs.BoolVar(&s.json, "json", false, "print the API's JSON answer even on a terminal")
	s.fs.DurationVar(&s.timeout, "timeout", time.Minute, "give up on a request after this long (exit 3)")
	return s
}

// parse parses args, flags and positional arguments in any order ("--" ends the flags), and
// wants between min and max positional arguments. done is true when the command should exit
// with code: after --help (0) or a usage error (2), reported with the help.
func (s *session) parse(args []string, min, max int) (code int, done bool) {
	s.fs.SetOutput(io.Discard)
	s.fs.Usage = func() {}
	for {
		err := s.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			s.printHelp(s.p.Stdout)
			return ExitOK, true
		}
		if err != nil {
			return s.usageError("%v", err), true
		}
		rest := s.fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			s.args = append(s.args, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		s.args = append(s.args, rest[0])
		args = rest[1:]
	}
	switch {
	case len(s.args) < min:
		return s.usageError("missing argument"), true
	case len(s.args) > max:
		return s.usageError("unexpected argument %q", s.args[max]), true
	}
	if s.rawURL == "" {
		s.rawURL = s.p.Getenv(EnvURL)
	}
	if s.rawURL == "" {
		s.rawURL = DefaultURL
	}
	base, err := parseBaseURL(s.rawURL)
	if err != nil {
		return s.usageError("gateway URL: %v", err), true
	}
	s.base = base
	if s.token == "" {
		s.token = s.p.Getenv(EnvAdminToken)
	}
	if s.timeout <= 0 {
		return s.usageError("--timeout must be more than 0"), true
	}
	// Proxies from the environment apply, as for curl; redirects are not followed.
	s.client = &http.Client{
		Timeout:       s.timeout,
		Transport:     &http.Transport{Proxy: http.ProxyFromEnvironment},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return 0, false
}

// parseBaseURL checks a gateway address: http or https, a host, no query.
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q has a query or fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// usageError reports a usage error with the command's help, and returns ExitUsage.
func (s *session) usageError(format string, args ...any) int {
	fmt.Fprintf(s.p.Stderr, "gateway: %s: %s\n\n", s.fs.Name(), fmt.Sprintf(format, args...))
	s.printHelp(s.p.Stderr)
	return ExitUsage
}

func (s *session) printHelp(w io.Writer) {
	fmt.Fprint(w, s.help)
	fmt.Fprintln(w, "\nflags:")
	s.fs.SetOutput(w)
	s.fs.PrintDefaults()
	s.fs.SetOutput(io.Discard)
	fmt.Fprint(w, connHelp+exitHelp)
}

// errorf reports an error on stderr and returns code.
func (s *session) errorf(code int, format string, args ...any) int {
	fmt.Fprintf(s.p.Stderr, "gateway: %s: %s\n", s.fs.Name(), fmt.Sprintf(format, args...))
	return code
}

// terminal reports whether the output is for a person: stdout is a terminal and --json was
// not given.
func (s *session) terminal() bool {
	if s.json {
		return false
	}
	f, ok := s.p.Stdout.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}
