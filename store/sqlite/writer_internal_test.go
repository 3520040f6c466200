package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Writes combined in one transaction keep their own outcomes: one that fails is rolled back
// alone, one whose context has ended does not run, and the others commit together.
func TestCombinedWritesFailAlone(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "gateway.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	insert := func(id string, fail error) *writeJob {
		return &writeJob{ctx: ctx, done: make(chan struct{}), fn: func(_ context.Context, tx *sql.Tx) error {
			if _, err := tx.Exec(`INSERT INTO events (id, type, payload, deliveries, received_at) VALUES (?, 'x', ?, 0, 0)`, id, []byte("{}")); err != nil {
				return err
			}
			return fail
		}}
	}
	boom := errors.New("boom")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	late := insert("late", nil)
	late.ctx = cancelled
	batch := []*writeJob{insert("a", nil), insert("b", boom), insert("a", nil), late, insert("c", nil)}
	s.runCombined(batch)

	if batch[0].err != nil || batch[4].err != nil {
		t.Fatalf("the good writes failed: %v, %v", batch[0].err, batch[4].err)
	}
	if !errors.Is(batch[1].err, boom) {
		t.Fatalf("the failing write: %v", batch[1].err)
	}
	if batch[2].err == nil {
		t.Fatal("a write breaking a constraint succeeded")
	}
	if !errors.Is(batch[3].err, context.Canceled) {
		t.Fatalf("the cancelled write: %v", batch[3].err)
	}
	rows, err := s.read.Query("SELECT id FROM events ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	if want := []string{"a", "c"}; !slices.Equal(ids, want) {
		t.Fatalf("stored %q, want %q", ids, want)
	}
}

// A write after Close fails plainly instead of waiting for a writer that is gone.
func TestWriteAfterClose(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.inTx(context.Background(), func(context.Context, *sql.Tx) error { return nil }); !errors.Is(err, errClosed) {
		t.Fatalf("inTx after Close: %v", err)
	}
}

// A write whose context ends while its statement runs in a combined transaction is not
// interrupted (SQLite would roll the whole transaction back, the other writes with it): it
// finishes, and so do the others.
func TestCancelledWriteDoesNotFailItsBatchMates(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "gateway.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	insert := func(id string) *writeJob {
		return &writeJob{ctx: ctx, done: make(chan struct{}), fn: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO events (id, type, payload, deliveries, received_at) VALUES (?, 'x', ?, 0, 0)`, id, []byte("{}"))
			return err
		}}
	}
	slowCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := make(chan struct{})
	slow := &writeJob{ctx: slowCtx, done: make(chan struct{}), fn: func(ctx context.Context, tx *sql.Tx) error {
		close(started)
		_, err := tx.ExecContext(ctx, `INSERT INTO events (id, type, payload, deliveries, received_at)
			WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20000)
			SELECT 'slow-'||i, 'x', x'7b7d', 0, 0 FROM n`)
		return err
	}}
	go func() { <-started; time.Sleep(time.Millisecond); cancel() }()
	batch := []*writeJob{insert("a"), slow, insert("c")}
	s.runCombined(batch)
	for i, j := range batch {
		if j.err != nil {
			t.Errorf("write %d: %v", i, j.err)
		}
	}
	var n int
	if err := s.read.QueryRow("SELECT count(*) FROM events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 20002 {
		t.Fatalf("%d events stored, want 20,002", n)
	}
}
