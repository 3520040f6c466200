// Package postgres is the Store that several gateway replicas share: a PostgreSQL database
// through pgx's connection pool, with its schema migrated on Open from SQL files embedded in
// the binary.
//
// Every method is one transaction. Transactions that touch several subscriptions lock their
// rows in id order, and lock subscription rows before delivery rows, so that replicas working
// on overlapping subscriptions queue rather than deadlock; a transaction that PostgreSQL still
// aborts as a deadlock (or a serialization failure) is run again, up to twice.
//
// Replicas hear of each other's changes through LISTEN/NOTIFY: see SubscriptionGeneration and
// Due.
package postgres

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/secretbox"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune Open.
type Options struct {
	// MaxConns is the size of the connection pool; 0 is pgxpool's default (the greater of 4 and
	// the number of CPUs). The store also holds one connection of its own, to listen.
	MaxConns int32
	// Secrets seals registration passwords and plugin configurations before they are written,
	// and opens them when they are read, as sqlite.Options.Secrets does. Open seals again every
	// stored secret that is not under the box's current key, and fails, naming the key id, when
	// one is under a key the box does not hold.
	Secrets *secretbox.Box
	// Logger hears what Open did to stored secrets, and when the listening connection drops;
	// nil is silent.
	Logger *slog.Logger
}

// Store is the PostgreSQL Store.
type Store struct {
	pool    *pgxpool.Pool
	secrets *secretbox.Box // nil: in clear
	log     *slog.Logger   // never nil

	// The channels this schema's stores notify each other on, and the advisory lock keys of
	// its migrations and prunes: each names the schema, so that stores of other schemas in the
	// same database neither hear nor block them.
	subscriptionsChannel, dueChannel string
	schema                           string

	generation atomic.Uint64 // see SubscriptionGeneration
	due        chan struct{} // see Due; buffered(1)
	// origin names this Store in its due notifications, so that it does not hear its own.
	origin string

	stopListening context.CancelFunc
	listening     chan struct{} // closed when the listener has returned

	failure atomic.Pointer[writeFailure] // see Writable
	probing sync.Mutex                   // one probe at a time (Writable)
	probed  time.Time                    // when the last probe began; guarded by probing

	uncertainMu sync.Mutex
	uncertain   []store.Lease // see releaseUncertain

	closeOnce sync.Once
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Notifier = (*Store)(nil)
)

// Open connects to the database dsn names (a postgres:// URL or a key=value string, as libpq
// takes; its search_path parameter chooses the schema), migrates the schema to the newest
// version, and starts listening for the other replicas' notifications.
//
// Replicas that start at once migrate once: each migrates under a transaction-scoped advisory
// lock, and finds the schema up to date once it has the lock. A schema newer than this binary is
// refused.
func Open(ctx context.Context, dsn string, opts Options) (_ *Store, err error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("postgres: MaxConns must not be negative, not %d", opts.MaxConns)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	origin := make([]byte, 8)
	rand.Read(origin)
	s := &Store{pool: pool, secrets: opts.Secrets, log: log, due: make(chan struct{}, 1), origin: hex.EncodeToString(origin)}
	defer func() {
		if err != nil {
			pool.Close()
		}
	}()
	var schema *string
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if schema == nil {
		return nil, errors.New("postgres: no schema in the search_path exists: create it, or set search_path to one that does")
	}
	s.schema = *schema
	s.subscriptionsChannel, s.dueChannel = channel("subscriptions", s.schema), channel("due", s.schema)
	if err := s.migrate(ctx); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := s.reseal(ctx); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	conn, err := s.connectListener(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("postgres: listen: %w", err)
	}
	listenCtx, stop := context.WithCancel(context.Background())
	s.stopListening, s.listening = stop, make(chan struct{})
	go s.listen(listenCtx, cfg.ConnConfig, conn)
	return s, nil
}

// channel is the name of a notification channel of schema: short enough for an identifier
// (63 bytes), which LISTEN would otherwise cut short.
func channel(kind, schema string) string {
	name := "webhookgw." + kind + "." + schema
	if len(name) <= 63 {
		return name
	}
	h := fnv.New64a()
	h.Write([]byte(schema))
	return "webhookgw." + kind + "." + strconv.FormatUint(h.Sum64(), 16)
}

// Close stops listening and closes the pool.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stopListening()
		<-s.listening
		s.pool.Close()
	})
	return nil
}

// Ping reports whether the database can be reached.
func (s *Store) Ping(ctx context.Context) error {
	return s.pool.Ping(ctx)
}

// advisoryKeys are the arguments of this schema's advisory lock for $1 (a name): two int4
// keys, the name's hash and the schema's.
const advisoryKeys = "hashtext($1), hashtext(current_schema())"

// migrate applies, in order and in one transaction that holds this schema's migration lock,
// every embedded migration newer than the database's version.
func (s *Store) migrate(ctx context.Context) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+advisoryKeys+")", "webhookgw migrate"); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		latest := 0
		for _, f := range files {
			name := strings.TrimPrefix(f, "migrations/")
			version, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migrate: %s: name must start with a version number", name)
			}
			latest = version
			if version <= current {
				continue
			}
			body, err := migrations.ReadFile(f)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("migrate %s: %w", name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				version, name, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("migrate %s: %w", name, err)
			}
		}
		if current > latest {
			return fmt.Errorf("database schema version %d is newer than this gateway's (%d): upgrade the gateway", current, latest)
		}
		return nil
	})
}

// maxTxRetries is how many times inTx runs a transaction again that PostgreSQL aborted as a
// deadlock or a serialization failure, or that lost a race (errRace).
const maxTxRetries = 2

// errRace is returned by a transaction that found another's committed work in its way, to be
// run again (by inTx), when it will see that work.
var errRace = errors.New("postgres: a concurrent transaction got there first")

// inTx runs fn in a transaction, committed unless fn fails, and records a failure of the
// database for Writable. A transaction aborted as a deadlock or a serialization failure is run
// again, fn included (fn starts from nothing it set before), as is one that lost a race
// (errRace).
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) (err error) {
	defer func() { s.noteWrite(err) }()
	for try := 0; ; try++ {
		err = pgx.BeginFunc(ctx, s.pool, fn)
		var pe *pgconn.PgError
		if try < maxTxRetries && (errors.Is(err, errRace) || errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")) {
			continue
		}
		return err
	}
}

// inTxOnce runs fn in a transaction, not tried again on a deadlock: for a transaction whose fn
// has effects outside it (IngestEvents' Lease answers), which its caller undoes and tries again.
func (s *Store) inTxOnce(ctx context.Context, fn func(pgx.Tx) error) (err error) {
	defer func() { s.noteWrite(err) }()
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// subscriptionsChanged, inside a transaction that changed subscriptions, bumps the generation
// in the database and notifies the other replicas when the transaction commits. It is the last
// statement of its transaction: the generation row is the last lock taken, never held while
// waiting for another.
func (s *Store) subscriptionsChanged(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, subscriptionsChangedSQL, s.subscriptionsChannel)
	return err
}

const subscriptionsChangedSQL = `WITH g AS (UPDATE subscription_generation SET generation = generation + 1 WHERE id = 1
	RETURNING generation) SELECT pg_notify($1, g.generation::text) FROM g`

// notifyDue, inside a transaction that made deliveries due, tells the other replicas when it
// commits. The payload names this Store, whose own listener ignores it: its caller knows.
func (s *Store) notifyDue(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, notifyDueSQL, s.dueChannel, s.origin)
	return err
}

const notifyDueSQL = "SELECT pg_notify($1, $2)"

// SubscriptionGeneration grows with every committed change to a subscription that matters to
// delivery, made through this Store or, as soon as its notification arrives, through another
// Store of the same schema (another replica). While the listening connection is down, changes
// elsewhere go unseen; when it is back, the generation grows once, as anything may have changed.
func (s *Store) SubscriptionGeneration() uint64 { return s.generation.Load() }

// Due delivers a value whenever another Store of the same schema may have made deliveries due:
// it ingested events, retried or released deliveries, reactivated a subscription or synced the
// file's. It does not deliver after this Store's own such changes (its caller knows of them),
// but does after the listening connection came back (what happened meanwhile is unknown). The channel holds one value; a
// reader that is behind misses none that matters.
func (s *Store) Due() <-chan struct{} { return s.due }

func (s *Store) signalDue() {
	select {
	case s.due <- struct{}{}:
	default:
	}
}

// connectListener opens the listening connection and listens on both channels.
func (s *Store) connectListener(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, err
	}
	for _, ch := range []string{s.subscriptionsChannel, s.dueChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			conn.Close(context.Background())
			return nil, err
		}
	}
	return conn, nil
}

// Reconnection backoff of the listening connection.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 10 * time.Second
)

// listen turns notifications into a bump of the generation or a value on Due, until ctx ends.
// When the connection drops it connects again, waiting longer after each failure.
func (s *Store) listen(ctx context.Context, cfg *pgx.ConnConfig, conn *pgx.Conn) {
	defer close(s.listening)
	backoff := listenBackoffMin
	for {
		if conn == nil {
			var err error
			if conn, err = s.connectListener(ctx, cfg); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("postgres: listening for other replicas' changes: cannot connect; trying again",
					"err", err, "in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, listenBackoffMax)
				continue
			}
			backoff = listenBackoffMin
			s.log.Info("postgres: listening for other replicas' changes again")
			// What was notified meanwhile is lost: assume everything changed.
			s.generation.Add(1)
			s.signalDue()
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(closeCtx)
			cancel()
			conn = nil
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("postgres: listening for other replicas' changes: connection lost", "err", err)
			continue
		}
		switch n.Channel {
		case s.subscriptionsChannel:
			s.generation.Add(1)
		case s.dueChannel:
			if n.Payload != s.origin {
				s.signalDue()
			}
		}
	}
}

const subscriptionColumns = `id, kind, source, url, events, headers, plugins, request_id, source_sender_id,
	username, password, active, deactivated_at, in_error_state, error_state_reason,
	detected_error_state_at, consecutive_failures, max_in_flight, rate_limit, ordering, version,
	created_at, updated_at`

var insertSubscriptionSQL = "INSERT INTO subscriptions (" + subscriptionColumns + ") VALUES (" +
	placeholders(1, strings.Count(subscriptionColumns, ",")+1) + ")"

// placeholders returns "$from, ..., $(from+n-1)".
func placeholders(from, n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = "$" + strconv.Itoa(from+i)
	}
	return strings.Join(ps, ", ")
}

// uniqueViolation reports whether err is PostgreSQL's unique_violation.
func uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// CreateSubscription stores sub.
func (s *Store) CreateSubscription(ctx context.Context, sub *store.Subscription) error {
	sub.Version = max(sub.Version, 1)
	args, err := s.subscriptionArgs(sub)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insertSubscriptionSQL, args...); err != nil {
			return err
		}
		return s.subscriptionsChanged(ctx, tx)
	})
	if uniqueViolation(err) {
		return fmt.Errorf("subscription %q: %w", sub.ID, store.ErrExists)
	}
	if err == nil {
		s.generation.Add(1)
	}
	return err
}

const selectSubscriptionSQL = "SELECT " + subscriptionColumns + " FROM subscriptions WHERE id = $1"

// GetSubscription returns the subscription with id.
func (s *Store) GetSubscription(ctx context.Context, id string) (*store.Subscription, error) {
	sub, err := s.scanSubscription(s.pool.QueryRow(ctx, selectSubscriptionSQL, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("subscription %q: %w", id, store.ErrNotFound)
	}
	return sub, err
}

// lockSubscription reads a subscription inside a transaction and locks its row until the
// transaction ends.
func (s *Store) lockSubscription(ctx context.Context, tx pgx.Tx, id string) (*store.Subscription, error) {
	sub, err := s.scanSubscription(tx.QueryRow(ctx, selectSubscriptionSQL+" FOR UPDATE", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("subscription %q: %w", id, store.ErrNotFound)
	}
	return sub, err
}

// ListSubscriptions returns subscriptions oldest first.
func (s *Store) ListSubscriptions(ctx context.Context, opts store.ListOptions) ([]*store.Subscription, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	query := "SELECT " + subscriptionColumns + " FROM subscriptions"
	args := []any{}
	if opts.After != "" {
		var createdAt int64
		err := s.pool.QueryRow(ctx, "SELECT created_at FROM subscriptions WHERE id = $1", opts.After).Scan(&createdAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("subscription %q: %w", opts.After, store.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		query += " WHERE (created_at, id) > ($1, $2)"
		args = append(args, createdAt, opts.After)
	}
	query += " ORDER BY created_at, id LIMIT $" + strconv.Itoa(len(args)+1)
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var subs []*store.Subscription
	for rows.Next() {
		sub, err := s.scanSubscription(rows)
		if err != nil {
			return nil, err
		}
		subs = append(subs, sub)
	}
	return subs, rows.Err()
}

// UpdateSubscription applies change to the subscription with id in one transaction, which
// locks its row. change may run again, on the subscription read again, when the transaction
// is retried after a deadlock.
func (s *Store) UpdateSubscription(ctx context.Context, id string, change func(*store.Subscription) error) (*store.Subscription, error) {
	var updated *store.Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := s.lockSubscription(ctx, tx, id)
		if err != nil {
			return err
		}
		keep := *sub
		// A deep copy of what SameDelivery compares: change may edit the slices and maps in place.
		store.CopyDeclaration(&keep, sub)
		if err := change(sub); err != nil {
			return err
		}
		sub.ID, sub.Source, sub.CreatedAt, sub.Version = keep.ID, keep.Source, keep.CreatedAt, keep.Version
		if !store.SameDelivery(&keep, sub) {
			sub.Version++
		}
		if err := s.updateSubscription(ctx, tx, sub); err != nil {
			return err
		}
		if sub.Active != keep.Active {
			if err := setPaused(ctx, tx, id, !sub.Active); err != nil {
				return err
			}
			if sub.Active { // reactivated: its backlog is due
				if err := s.notifyDue(ctx, tx); err != nil {
					return err
				}
			}
		}
		updated = sub
		return s.subscriptionsChanged(ctx, tx)
	})
	if err != nil {
		return nil, err
	}
	s.generation.Add(1)
	return updated, nil
}

var updateSubscriptionSQL = `UPDATE subscriptions SET kind = $2, source = $3, url = $4, events = $5,
	headers = $6, plugins = $7, request_id = $8, source_sender_id = $9, username = $10, password = $11,
	active = $12, deactivated_at = $13, in_error_state = $14, error_state_reason = $15,
	detected_error_state_at = $16, consecutive_failures = $17, max_in_flight = $18, rate_limit = $19, ordering = $20,
	version = $21, created_at = $22, updated_at = $23 WHERE id = $1`

func (s *Store) updateSubscription(ctx context.Context, tx pgx.Tx, sub *store.Subscription) error {
	args, err := s.subscriptionArgs(sub)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, updateSubscriptionSQL, args...)
	return err
}

// DeleteSubscription removes the subscription with id and fails its pending deliveries.
func (s *Store) DeleteSubscription(ctx context.Context, id string, now time.Time) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var source string
		err := tx.QueryRow(ctx, "SELECT source FROM subscriptions WHERE id = $1 FOR UPDATE", id).Scan(&source)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("subscription %q: %w", id, store.ErrNotFound)
		case err != nil:
			return err
		case store.Source(source) != store.SourceAPI:
			return fmt.Errorf("subscription %q: %w", id, store.ErrOwnedByFile)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM subscriptions WHERE id = $1", id); err != nil {
			return err
		}
		if err := failPending(ctx, tx, id, "subscription deleted", now); err != nil {
			return err
		}
		return s.subscriptionsChanged(ctx, tx)
	})
	if err == nil {
		s.generation.Add(1)
	}
	return err
}

// SyncFileSubscriptions makes the file-owned subscriptions match subs. It locks the
// file-owned subscriptions and those subs name, in id order, so that replicas that start at
// once sync one after the other: the second finds the first's work done.
func (s *Store) SyncFileSubscriptions(ctx context.Context, subs []*store.Subscription, now time.Time) (store.SyncResult, error) {
	var res store.SyncResult
	ids := make([]string, len(subs))
	for i, sub := range subs {
		ids[i] = sub.ID
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		res = store.SyncResult{}
		rows, err := tx.Query(ctx, "SELECT "+subscriptionColumns+
			" FROM subscriptions WHERE source = $1 OR id = ANY($2) ORDER BY id FOR UPDATE", string(store.SourceFile), ids)
		if err != nil {
			return err
		}
		have := make(map[string]*store.Subscription)
		for rows.Next() {
			sub, err := s.scanSubscription(rows)
			if err != nil {
				rows.Close()
				return err
			}
			have[sub.ID] = sub
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		keep := make(map[string]bool, len(subs))
		for _, want := range subs {
			keep[want.ID] = true
			old, ok := have[want.ID]
			if !ok {
				sub := *want
				sub.Kind, sub.Source, sub.Active, sub.Version = store.KindWebhook, store.SourceFile, true, 1
				sub.CreatedAt, sub.UpdatedAt = now, now
				args, err := s.subscriptionArgs(&sub)
				if err != nil {
					return err
				}
				// Another replica's sync may create it meanwhile: this one waits for it to
				// commit, then runs again (errRace), finding it.
				tag, err := tx.Exec(ctx, insertSubscriptionSQL+" ON CONFLICT (id) DO NOTHING", args...)
				if err != nil {
					return err
				}
				if tag.RowsAffected() == 0 {
					return fmt.Errorf("subscription %q was created meanwhile: %w", want.ID, errRace)
				}
				res.Created++
				continue
			}
			switch {
			case old.Source != store.SourceFile:
				return fmt.Errorf("subscription %q: %w", want.ID, store.ErrOwnedByAPI)
			case !store.SameDeclaration(old, want):
				store.CopyDeclaration(old, want)
				old.UpdatedAt = now
				old.Version++
				if err := s.updateSubscription(ctx, tx, old); err != nil {
					return err
				}
				res.Updated++
			}
		}
		gone := make([]string, 0)
		for id, sub := range have {
			if sub.Source == store.SourceFile && !keep[id] {
				gone = append(gone, id)
			}
		}
		sort.Strings(gone)
		for _, id := range gone {
			if _, err := tx.Exec(ctx, "DELETE FROM subscriptions WHERE id = $1", id); err != nil {
				return err
			}
			if err := failPending(ctx, tx, id, "subscription removed from the file", now); err != nil {
				return err
			}
			res.Deleted++
		}
		if res == (store.SyncResult{}) {
			return nil
		}
		if err := s.notifyDue(ctx, tx); err != nil {
			return err
		}
		return s.subscriptionsChanged(ctx, tx)
	})
	if err == nil && res != (store.SyncResult{}) {
		s.generation.Add(1)
	}
	return res, err
}

// subscriptionArgs returns sub's values in the order of subscriptionColumns, its password and
// plugin configurations sealed.
func (s *Store) subscriptionArgs(sub *store.Subscription) ([]any, error) {
	events, err := json.Marshal(sub.Events)
	if err != nil {
		return nil, err
	}
	var headers *string // NULL when none
	if len(sub.Headers) > 0 {
		b, err := json.Marshal(sub.Headers)
		if err != nil {
			return nil, err
		}
		h := string(b)
		headers = &h
	}
	password, err := s.secrets.Seal(sub.Password, passwordAAD(sub.ID))
	if err != nil {
		return nil, err
	}
	plugins, err := s.sealPlugins(sub.ID, sub.Plugins)
	if err != nil {
		return nil, err
	}
	return []any{
		sub.ID, string(sub.Kind), string(sub.Source), sub.URL, string(events), headers, plugins,
		sub.RequestID, sub.SourceSenderID, sub.Username, password, sub.Active, nanos(sub.DeactivatedAt),
		sub.InErrorState, sub.ErrorStateReason, nanos(sub.DetectedErrorStateAt), sub.ConsecutiveFailures,
		sub.Policy.MaxInFlight, sub.Policy.RateLimit, string(sub.Policy.Ordering), sub.Version,
		sub.CreatedAt.UnixNano(), sub.UpdatedAt.UnixNano(),
	}, nil
}

// scanSubscription reads a row of subscriptionColumns, opening its password and plugin
// configurations.
func (s *Store) scanSubscription(row pgx.Row) (*store.Subscription, error) {
	var (
		sub                            store.Subscription
		kind, source, events, plugins  string
		password, ordering             string
		headers                        *string
		deactivatedAt, detectedErrorAt *int64
		createdAt, updatedAt           int64
	)
	err := row.Scan(&sub.ID, &kind, &source, &sub.URL, &events, &headers, &plugins, &sub.RequestID,
		&sub.SourceSenderID, &sub.Username, &password, &sub.Active, &deactivatedAt, &sub.InErrorState,
		&sub.ErrorStateReason, &detectedErrorAt, &sub.ConsecutiveFailures, &sub.Policy.MaxInFlight,
		&sub.Policy.RateLimit, &ordering, &sub.Version, &createdAt, &updatedAt)
	if err != nil {
		return nil, err
	}
	sub.Kind, sub.Source, sub.Policy.Ordering = store.Kind(kind), store.Source(source), store.Ordering(ordering)
	if err := json.Unmarshal([]byte(events), &sub.Events); err != nil {
		return nil, fmt.Errorf("subscription %q: events: %w", sub.ID, err)
	}
	if headers != nil {
		if err := json.Unmarshal([]byte(*headers), &sub.Headers); err != nil {
			return nil, fmt.Errorf("subscription %q: headers: %w", sub.ID, err)
		}
	}
	if sub.Password, err = s.secrets.Open(password, passwordAAD(sub.ID)); err != nil {
		return nil, fmt.Errorf("subscription %q: password: %w", sub.ID, err)
	}
	if sub.Plugins, err = s.openPlugins(sub.ID, plugins); err != nil {
		return nil, err
	}
	sub.DeactivatedAt = fromNanos(deactivatedAt)
	sub.DetectedErrorStateAt = fromNanos(detectedErrorAt)
	sub.CreatedAt = time.Unix(0, createdAt).UTC()
	sub.UpdatedAt = time.Unix(0, updatedAt).UTC()
	return &sub, nil
}

// nanos is t in Unix nanoseconds, or nil (NULL) for none.
func nanos(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromNanos(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := time.Unix(0, *n).UTC()
	return &t
}
