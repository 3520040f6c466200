// Package sqlite is the embedded Store: one SQLite file through the pure-Go modernc.org/sqlite
// driver, in WAL mode, with its schema migrated on Open from SQL files embedded in the binary.
//
// Writes go through one connection and take the write lock when they begin (BEGIN IMMEDIATE),
// so concurrent writers queue instead of failing with SQLITE_BUSY; reads use a pool of their own
// and never wait for writers.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/secretbox"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune Open.
type Options struct {
	// Synchronous is "normal" (the default: survives a process crash) or "full" (also a power
	// loss).
	Synchronous string
	// Secrets seals registration passwords and plugin configurations (which hold tokens and
	// secrets) before they are written, and opens them when they are read, so that the file
	// holds them encrypted and callers see them in clear. Nil stores them in clear. Open seals
	// again every stored secret that is not under the box's current key (plaintext from before
	// encryption was turned on, or a previous key's), and fails, naming the key id, when one
	// is under a key the box does not hold.
	Secrets *secretbox.Box
	// Logger hears what Open did to stored secrets; nil is silent.
	Logger *slog.Logger
}

// Store is the SQLite Store.
type Store struct {
	write *sql.DB // one connection, BEGIN IMMEDIATE
	read  *sql.DB // a pool, query_only

	stmts map[string]*sql.Stmt // hotQueries, prepared at Open; read-only after

	// The writer goroutine runs every write transaction (inTx).
	writes     chan *writeJob
	closing    chan struct{}
	writerDone chan struct{}
	stopOnce   sync.Once

	lock *os.File // the exclusive lock on the file, held until Close

	secrets *secretbox.Box // nil: in clear

	generation atomic.Uint64 // see SubscriptionGeneration
	fanout     atomic.Pointer[fanout]

	failure atomic.Pointer[writeFailure] // the last write that failed for want of storage; nil: none since the last probe
	probing sync.Mutex                   // one probe at a time (Writable)
	probed  time.Time                    // when the last probe began; guarded by probing
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if need be) the database file at path and migrates it to the newest
// schema. It takes an exclusive lock on the file (path + ".lock", holding this process's id)
// until Close: while one Store has it open, Open fails with ErrInUse, naming the holder's
// process id, in this process or any other.
func Open(ctx context.Context, path string, opts Options) (_ *Store, err error) {
	if path == "" {
		return nil, errors.New("sqlite: empty path")
	}
	if path == ":memory:" || strings.Contains(path, "mode=memory") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: %q: give a file path; an in-memory database is not shared between the gateway's connections", path)
	}
	sync := strings.ToUpper(opts.Synchronous)
	if sync == "" {
		sync = "NORMAL"
	}
	if sync != "NORMAL" && sync != "FULL" {
		return nil, fmt.Errorf("sqlite: synchronous must be normal or full, not %q", opts.Synchronous)
	}
	dsn := func(extra ...string) string {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous("+sync+")")
		q.Add("_pragma", "foreign_keys(1)")
		for i := 0; i+1 < len(extra); i += 2 {
			q.Add(extra[i], extra[i+1])
		}
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	// Said plainly here, these would reach the user as "unable to open database file (14)"
	// or "attempt to write a readonly database".
	if err := checkDir(path); err != nil {
		return nil, err
	}
	fileLock, err := lock(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unlock(fileLock)
		}
	}()
	if err := checkFiles(path); err != nil {
		return nil, err
	}
	write, err := sql.Open("sqlite", dsn("_txlock", "immediate"))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	s := &Store{write: write, stmts: make(map[string]*sql.Stmt), secrets: opts.Secrets}
	s.startWriter()
	if err := s.migrate(ctx); err != nil {
		s.stopWriter()
		write.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	if err := s.reseal(ctx, opts.Logger); err != nil {
		s.stopWriter()
		write.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	if err := s.prepareHot(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", dsn("_pragma", "query_only(1)"))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	read.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.read = read
	s.lock = fileLock
	return s, nil
}

// Close closes both connection pools, then releases the file's lock.
func (s *Store) Close() error {
	s.stopWriter()
	for _, st := range s.stmts {
		st.Close()
	}
	if s.read == nil { // Open failed half way; it releases the lock
		return s.write.Close()
	}
	lock := s.lock
	s.lock = nil // a second Close has no lock to release
	return errors.Join(s.read.Close(), s.write.Close(), unlock(lock))
}

// hotQueries are prepared once at Open, on the writer's one connection, so the transactions of
// ingest, claim and completion use them without parsing their SQL again.
var hotQueries = []string{
	insertEventSQL, insertDeliverySQL, activeSubscriptionsSQL, duplicateEventSQL, claimSQL, nextDueSQL,
	fifoHeadSQL, claimOneSQL, claimedEventSQL, selectSubscriptionSQL, insertAttemptSQL, completeDeliverySQL,
	updateSubscriptionSQL, releaseSQL, extendSQL,
}

// prepareHot prepares hotQueries. It runs before any transaction: the writer has one
// connection, which a transaction would hold.
func (s *Store) prepareHot(ctx context.Context) error {
	for _, q := range hotQueries {
		st, err := s.write.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		s.stmts[q] = st
	}
	return nil
}

// stmt returns query prepared for tx: a hot query's statement, or one prepared for tx alone.
func (s *Store) stmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts[query]; ok {
		return tx.StmtContext(ctx, st), nil
	}
	return tx.PrepareContext(ctx, query)
}

// Ping reports whether the database file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var version int
	return s.read.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&version)
}

// migrate applies, in order and each in its own transaction, every embedded migration newer
// than the database's version. A database newer than this binary is refused.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := s.write.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
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
		if err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				version, name, time.Now().UnixNano())
			return err
		}); err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
	}
	if current > latest {
		return fmt.Errorf("database schema version %d is newer than this gateway's (%d): upgrade the gateway", current, latest)
	}
	return nil
}

// SubscriptionGeneration grows with every committed change to a subscription that matters to
// delivery.
func (s *Store) SubscriptionGeneration() uint64 { return s.generation.Load() }

// subscriptionsChanging, inside a write transaction about to change subscriptions, bumps the
// generation before they change, as well as after the commit: a write combined in the same
// transaction after this one (an ingest asking the engine whether to lease at birth) sees
// subscriptions that changed under the engine's copies, as the engine does.
func (s *Store) subscriptionsChanging() { s.generation.Add(1) }

const subscriptionColumns = `id, kind, source, url, events, headers, plugins, request_id, source_sender_id,
	username, password, active, deactivated_at, in_error_state, error_state_reason,
	detected_error_state_at, consecutive_failures, max_in_flight, rate_limit, ordering, version,
	created_at, updated_at`

var insertSubscription = "INSERT INTO subscriptions (" + subscriptionColumns + ") VALUES (" +
	placeholders(strings.Count(subscriptionColumns, ",")+1) + ")"

// CreateSubscription stores sub.
func (s *Store) CreateSubscription(ctx context.Context, sub *store.Subscription) error {
	sub.Version = max(sub.Version, 1)
	args, err := s.subscriptionArgs(sub)
	if err != nil {
		return err
	}
	s.staleFanout()
	_, err = s.write.ExecContext(ctx, insertSubscription, args...)
	s.staleFanout() // an ingest may have made the index between the two
	s.noteWrite(err)
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("subscription %q: %w", sub.ID, store.ErrExists)
	}
	if err == nil {
		s.generation.Add(1)
	}
	return err
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var selectSubscriptionSQL = "SELECT " + subscriptionColumns + " FROM subscriptions WHERE id = ?"

// GetSubscription returns the subscription with id. Transactions read through txSubscription.
func (s *Store) GetSubscription(ctx context.Context, id string) (*store.Subscription, error) {
	sub, err := s.scanSubscription(s.read.QueryRowContext(ctx, selectSubscriptionSQL, id))
	if errors.Is(err, sql.ErrNoRows) {
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
		err := s.read.QueryRowContext(ctx, "SELECT created_at FROM subscriptions WHERE id = ?", opts.After).Scan(&createdAt)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("subscription %q: %w", opts.After, store.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		query += " WHERE (created_at, id) > (?, ?)"
		args = append(args, createdAt, opts.After)
	}
	query += " ORDER BY created_at, id LIMIT ?"
	args = append(args, limit)
	rows, err := s.read.QueryContext(ctx, query, args...)
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

// UpdateSubscription applies change to the subscription with id in one transaction.
func (s *Store) UpdateSubscription(ctx context.Context, id string, change func(*store.Subscription) error) (*store.Subscription, error) {
	var updated *store.Subscription
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		sub, err := s.txSubscription(ctx, tx, id)
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
		s.subscriptionsChanging()
		if err := s.updateSubscription(ctx, tx, sub); err != nil {
			return err
		}
		if sub.Active != keep.Active {
			if err := setPaused(ctx, tx, id, !sub.Active); err != nil {
				return err
			}
		}
		updated = sub
		return nil
	})
	if err == nil {
		s.generation.Add(1)
	}
	return updated, err
}

const updateSubscriptionSQL = `UPDATE subscriptions SET kind = ?, source = ?, url = ?, events = ?,
	headers = ?, plugins = ?, request_id = ?, source_sender_id = ?, username = ?, password = ?,
	active = ?, deactivated_at = ?, in_error_state = ?, error_state_reason = ?,
	detected_error_state_at = ?, consecutive_failures = ?, max_in_flight = ?, rate_limit = ?, ordering = ?,
	version = ?, created_at = ?, updated_at = ? WHERE id = ?`

func (s *Store) updateSubscription(ctx context.Context, tx *sql.Tx, sub *store.Subscription) error {
	s.staleFanout()
	args, err := s.subscriptionArgs(sub)
	if err != nil {
		return err
	}
	st, err := s.stmt(ctx, tx, updateSubscriptionSQL)
	if err != nil {
		return err
	}
	// args[0] is the id; the rest follow subscriptionColumns.
	_, err = st.ExecContext(ctx, append(args[1:], args[0])...)
	return err
}

// DeleteSubscription removes the subscription with id and fails its pending deliveries.
func (s *Store) DeleteSubscription(ctx context.Context, id string, now time.Time) error {
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var source string
		err := tx.QueryRowContext(ctx, "SELECT source FROM subscriptions WHERE id = ?", id).Scan(&source)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("subscription %q: %w", id, store.ErrNotFound)
		case err != nil:
			return err
		case store.Source(source) != store.SourceAPI:
			return fmt.Errorf("subscription %q: %w", id, store.ErrOwnedByFile)
		}
		s.staleFanout()
		s.subscriptionsChanging()
		if _, err := tx.ExecContext(ctx, "DELETE FROM subscriptions WHERE id = ?", id); err != nil {
			return err
		}
		return failPending(ctx, tx, id, "subscription deleted", now)
	})
	if err == nil {
		s.generation.Add(1)
	}
	return err
}

// SyncFileSubscriptions makes the file-owned subscriptions match subs.
func (s *Store) SyncFileSubscriptions(ctx context.Context, subs []*store.Subscription, now time.Time) (store.SyncResult, error) {
	var res store.SyncResult
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res = store.SyncResult{}
		s.subscriptionsChanging() // perhaps: at worst the engine reads them again for nothing
		keep := make(map[string]bool, len(subs))
		for _, want := range subs {
			keep[want.ID] = true
			have, err := s.txSubscription(ctx, tx, want.ID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				sub := *want
				sub.Kind, sub.Source, sub.Active, sub.Version = store.KindWebhook, store.SourceFile, true, 1
				sub.CreatedAt, sub.UpdatedAt = now, now
				args, err := s.subscriptionArgs(&sub)
				if err != nil {
					return err
				}
				s.staleFanout()
				if _, err := tx.ExecContext(ctx, insertSubscription, args...); err != nil {
					return err
				}
				res.Created++
			case err != nil:
				return err
			case have.Source != store.SourceFile:
				return fmt.Errorf("subscription %q: %w", want.ID, store.ErrOwnedByAPI)
			case !store.SameDeclaration(have, want):
				store.CopyDeclaration(have, want)
				have.UpdatedAt = now
				have.Version++
				if err := s.updateSubscription(ctx, tx, have); err != nil {
					return err
				}
				res.Updated++
			}
		}
		rows, err := tx.QueryContext(ctx, "SELECT id FROM subscriptions WHERE source = ?", store.SourceFile)
		if err != nil {
			return err
		}
		var gone []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			if !keep[id] {
				gone = append(gone, id)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range gone {
			s.staleFanout()
			if _, err := tx.ExecContext(ctx, "DELETE FROM subscriptions WHERE id = ?", id); err != nil {
				return err
			}
			if err := failPending(ctx, tx, id, "subscription removed from the file", now); err != nil {
				return err
			}
			res.Deleted++
		}
		return nil
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
	var headers any // NULL when none
	if len(sub.Headers) > 0 {
		b, err := json.Marshal(sub.Headers)
		if err != nil {
			return nil, err
		}
		headers = string(b)
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

type scanner interface{ Scan(dest ...any) error }

// scanSubscription reads a row of subscriptionColumns, opening its password and plugin
// configurations.
func (s *Store) scanSubscription(row scanner) (*store.Subscription, error) {
	var (
		sub                            store.Subscription
		kind, source, events, plugins  string
		password, ordering             string
		headers                        sql.NullString
		deactivatedAt, detectedErrorAt sql.NullInt64
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
	if headers.Valid {
		if err := json.Unmarshal([]byte(headers.String), &sub.Headers); err != nil {
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

func nanos(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixNano()
}

func fromNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := time.Unix(0, n.Int64).UTC()
	return &t
}
