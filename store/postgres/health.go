package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// probeEvery bounds how often Writable tries a write while writes fail.
const probeEvery = time.Second

// writeFailure is a write that failed because the database could not take it.
type writeFailure struct {
	err error
	at  time.Time
}

// storageFailure reports whether err says that the database cannot be written, whatever the
// write: it cannot be reached (a connection refused or lost, a timeout while connecting), it is
// out of resources (a full disk, too many connections: SQLSTATE class 53), it failed
// internally (class 58, an I/O error), it is shutting down or starting (57P01-57P03), or it
// is read-only (a hot standby, default_transaction_read_only: 25006). A constraint, a
// cancelled context or a caller's own error says nothing about the database.
func storageFailure(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "53"), strings.HasPrefix(pe.Code, "58"), strings.HasPrefix(pe.Code, "08"):
			return true
		}
		switch pe.Code {
		case "25006", "57P01", "57P02", "57P03":
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err)
}

// noteWrite records err, the outcome of a write, when it is a storage failure, for Writable;
// it returns err.
func (s *Store) noteWrite(err error) error {
	if storageFailure(err) {
		s.failure.Store(&writeFailure{err: err, at: time.Now()})
	}
	return err
}

// Writable reports whether writes work. It is nil until a write fails because the database
// cannot take it (it cannot be reached, is full, read-only, or failing); from then on it is
// that failure, until a probe write commits again. Writable makes the probe itself, at most
// once a second: a committed transaction that adds a row and takes it away again. While
// writes succeed, it does no I/O.
func (s *Store) Writable(ctx context.Context) error {
	f := s.failure.Load()
	if f == nil {
		return nil
	}
	failing := func(f *writeFailure) error {
		return fmt.Errorf("postgres: writes fail (the last at %s): %w", f.at.UTC().Format(time.RFC3339), f.err)
	}
	if !s.probing.TryLock() { // another caller is finding out
		return failing(f)
	}
	defer s.probing.Unlock()
	if time.Since(s.probed) < probeEvery {
		if f := s.failure.Load(); f != nil {
			return failing(f)
		}
		return nil
	}
	s.probed = time.Now()
	if err := s.probe(ctx); err != nil {
		if f := s.failure.Load(); f != nil && storageFailure(err) {
			return failing(f)
		}
		return fmt.Errorf("postgres: writes failed (the last at %s: %w), and a probe write failed too: %w",
			f.at.UTC().Format(time.RFC3339), f.err, err)
	}
	s.failure.Store(nil)
	return nil
}

// probe commits a transaction that writes and leaves nothing behind. It uses
// schema_migrations, the gateway's own table, so that the probe needs no table of its own;
// version -1 is never a migration, and no reader sees the row.
func (s *Store) probe(ctx context.Context) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (-1, 'probe', 0)"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM schema_migrations WHERE version = -1")
		return err
	})
}
