package sqlite

import (
	"context"
	"database/sql"
	"errors"
)

// errClosed is what a write after Close returns.
var errClosed = errors.New("sqlite: the store is closed")

// maxCombined bounds how many writes share one transaction.
const maxCombined = 64

// writeJob is one inTx call waiting for the writer.
type writeJob struct {
	ctx  context.Context
	fn   func(context.Context, *sql.Tx) error
	err  error
	done chan struct{}
}

// inTx runs fn in a write transaction (BEGIN IMMEDIATE), committed unless fn fails, and
// records a failure for want of storage for Writable.
//
// SQLite has one writer, so writes queue for it anyway; the writer goroutine runs the writes
// that are waiting when it starts a transaction together in it (an ingest beside a batch of
// delivery outcomes, say), each in a savepoint of its own, and commits once for all of them:
// one commit, and one write of each page they share, instead of one each. A write that fails
// is rolled back to its savepoint and fails alone; when the commit fails, every write in it
// fails.
func (s *Store) inTx(ctx context.Context, fn func(context.Context, *sql.Tx) error) (err error) {
	defer func() { s.noteWrite(err) }()
	j := &writeJob{ctx: ctx, fn: fn, done: make(chan struct{})}
	select {
	case s.writes <- j:
	case <-s.closing:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-j.done // once taken, the write runs: its outcome is waited for, whatever ctx does
	return j.err
}

// startWriter starts the writer goroutine, which runs until stopWriter.
func (s *Store) startWriter() {
	s.writes = make(chan *writeJob) // unbuffered: a write is waiting until the writer takes it
	s.closing = make(chan struct{})
	s.writerDone = make(chan struct{})
	go s.writeLoop()
}

// stopWriter stops the writer goroutine once the writes it has taken are done.
func (s *Store) stopWriter() {
	s.stopOnce.Do(func() {
		close(s.closing)
		<-s.writerDone
	})
}

func (s *Store) writeLoop() {
	defer close(s.writerDone)
	for {
		var first *writeJob
		select {
		case first = <-s.writes:
		case <-s.closing:
			return
		}
		batch := []*writeJob{first}
	gather:
		for len(batch) < maxCombined {
			select {
			case j := <-s.writes:
				batch = append(batch, j)
			default:
				break gather
			}
		}
		if len(batch) == 1 {
			first.err = s.runTx(first.ctx, first.fn)
		} else {
			s.runCombined(batch)
		}
		for _, j := range batch {
			close(j.done)
		}
	}
}

// runTx runs fn alone in a transaction.
func (s *Store) runTx(ctx context.Context, fn func(context.Context, *sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(ctx, tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// runCombined runs the writes of batch in one transaction, each in a savepoint, and sets each
// one's err.
func (s *Store) runCombined(batch []*writeJob) {
	// The transaction is the batch's, not one write's: a write's cancelled context fails that
	// write, not the others'.
	tx, err := s.write.BeginTx(context.Background(), nil)
	if err != nil {
		for _, j := range batch {
			j.err = err
		}
		return
	}
	abort := func(err error) {
		tx.Rollback()
		s.staleFanout() // an ingest may have indexed what is rolled back
		for _, j := range batch {
			if j.err == nil {
				j.err = err
			}
		}
	}
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil {
			j.err = err
			continue
		}
		if _, err := tx.Exec("SAVEPOINT write"); err != nil {
			abort(err)
			return
		}
		// Its statements run without its cancellation: SQLite rolls back the whole
		// transaction, the others' writes too, when a statement in it is interrupted.
		if err := j.fn(context.WithoutCancel(j.ctx), tx); err != nil {
			j.err = err
			if _, rerr := tx.Exec("ROLLBACK TO write"); rerr != nil {
				abort(rerr) // SQLite rolled back the whole transaction (an interrupted statement)
				return
			}
		}
		if _, err := tx.Exec("RELEASE write"); err != nil {
			abort(err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		abort(err)
	}
}
