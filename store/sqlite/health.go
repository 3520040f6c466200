package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// probeEvery bounds how often Writable tries a write while writes fail.
const probeEvery = time.Second

// writeFailure is a write that failed for want of storage.
type writeFailure struct {
	err error
	at  time.Time
}

// storageFailure reports whether err says that the database cannot be written, whatever the
// write: the disk (or max_page_count) is full, an I/O error, a read-only or unopenable file, a
// corrupt one, or another program holding SQLite's write lock past busy_timeout. A
// constraint, a cancelled context or a caller's own error says nothing about the storage.
func storageFailure(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // the primary code; SQLITE_IOERR_WRITE is SQLITE_IOERR | 3<<8
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_BUSY:
		return true
	}
	return false
}

// noteWrite records err, the outcome of a write, when it is a storage failure, for Writable;
// it returns err.
func (s *Store) noteWrite(err error) error {
	if storageFailure(err) {
		s.failure.Store(&writeFailure{err: err, at: time.Now()})
	}
	return err
}

// Writable reports whether writes work. It is nil until a write fails for want of storage (a
// full disk, an I/O error, a read-only file); from then on it is that failure, until a probe
// write commits again. Writable makes the probe itself, at most once a second: a committed
// transaction that adds a page's worth of data and takes it away again, which a full disk
// refuses. While writes succeed, it does no I/O.
func (s *Store) Writable(ctx context.Context) error {
	f := s.failure.Load()
	if f == nil {
		return nil
	}
	failing := func(f *writeFailure) error {
		return fmt.Errorf("sqlite: writes fail (the last at %s): %w", f.at.UTC().Format(time.RFC3339), f.err)
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
		return fmt.Errorf("sqlite: writes failed (the last at %s: %w), and a probe write failed too: %w",
			f.at.UTC().Format(time.RFC3339), f.err, err)
	}
	s.failure.Store(nil)
	return nil
}

// probeSQL adds a page's worth of data, to be deleted in the same transaction. It uses
// schema_migrations, the gateway's own table, so that the probe needs no table of its own;
// version -1 is never a migration, and no reader sees the row.
const probeSQL = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (-1, hex(zeroblob(4096)), 0)"

// probe commits a transaction that writes (the database grows by a few pages, freed again)
// and leaves nothing behind.
func (s *Store) probe(ctx context.Context) error {
	return s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, probeSQL); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "DELETE FROM schema_migrations WHERE version = -1")
		return err
	})
}

// SetMaxPageCount sets SQLite's max_page_count on the writer's connection and returns the
// limit in force: the database cannot grow past that many pages, and a write that would grow
// it fails with SQLITE_FULL ("database or disk is full"), as on a full disk. A limit below the
// database's size is raised to its size. Tests use it to fill the disk without filling one;
// the gateway never calls it.
func (s *Store) SetMaxPageCount(ctx context.Context, pages int64) (int64, error) {
	var n int64
	err := s.write.QueryRowContext(ctx, "PRAGMA max_page_count = "+strconv.FormatInt(pages, 10)).Scan(&n)
	return n, err
}
