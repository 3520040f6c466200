package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/webhookgw/gateway/store"
)

// IngestEvents stores events and their deliveries in one transaction.
func (s *Store) IngestEvents(ctx context.Context, events []*store.Event, newID func() string) ([]store.IngestResult, error) {
	results := make([]store.IngestResult, len(events))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		subs, err := s.activeSubscriptions(ctx, tx)
		if err != nil {
			return err
		}
		insertEvent, err := s.stmt(ctx, tx, insertEventSQL)
		if err != nil {
			return err
		}
		insertDelivery, err := s.stmt(ctx, tx, insertDeliverySQL)
		if err != nil {
			return err
		}
		duplicate, err := s.stmt(ctx, tx, duplicateEventSQL)
		if err != nil {
			return err
		}
		for i, ev := range events {
			var targets []string
			for _, sub := range subs {
				if sub.matches(ev.Type) {
					targets = append(targets, sub.id)
				}
			}
			at := ev.ReceivedAt.UnixNano()
			res, err := insertEvent.ExecContext(ctx, ev.ID, ev.Type, ev.Payload, ev.TraceParent, len(targets), at)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				r := store.IngestResult{ID: ev.ID, Duplicate: true}
				if err := duplicate.QueryRowContext(ctx, ev.ID).Scan(&r.Type, &r.Deliveries); err != nil {
					return err
				}
				results[i] = r
				continue
			}
			for _, subID := range targets {
				if _, err := insertDelivery.ExecContext(ctx, newID(), ev.ID, subID, at, at, at); err != nil {
					return err
				}
			}
			results[i] = store.IngestResult{ID: ev.ID, Type: ev.Type, Deliveries: len(targets)}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

const (
	insertEventSQL = `INSERT INTO events (id, type, payload, traceparent, deliveries, received_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	insertDeliverySQL = `INSERT INTO deliveries (id, event_id, subscription_id, status,
		next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)`
	duplicateEventSQL      = "SELECT type, deliveries FROM events WHERE id = ?"
	activeSubscriptionsSQL = "SELECT id, events FROM subscriptions WHERE active = 1 ORDER BY created_at, id"
	claimedEventSQL        = "SELECT type, payload, traceparent, received_at FROM events WHERE id = ?"
	insertAttemptSQL       = `INSERT INTO attempts (delivery_id, attempted_at, duration,
		status_code, error, response_body, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?)`
	completeDeliverySQL = `UPDATE deliveries SET status = ?, attempts = attempts + ?, step = step + ?,
		next_attempt_at = ?, lease_until = 0, last_status_code = ?, last_error = ?, updated_at = ?, finished_at = ?
		WHERE id = ? AND status = 'pending'`
)

// claimSQL leases due deliveries; claimSkipSQL is the same with the subscriptions to skip.
const (
	claimSelect = `SELECT d.id FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
		WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND d.lease_until <= ? AND s.active = 1`
	claimReturning = ` ORDER BY d.next_attempt_at LIMIT ?) RETURNING id, event_id, subscription_id, status,
		attempts, step, next_attempt_at, last_status_code, last_error, created_at, updated_at`
	claimSQL = `UPDATE deliveries SET lease_until = ? WHERE id IN (` + claimSelect + claimReturning
)

// target is an active subscription as fan-out needs it.
type target struct {
	id     string
	all    bool
	events []string
}

func (t target) matches(eventType string) bool {
	return t.all || slices.Contains(t.events, eventType)
}

func (s *Store) activeSubscriptions(ctx context.Context, tx *sql.Tx) ([]target, error) {
	st, err := s.stmt(ctx, tx, activeSubscriptionsSQL)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var subs []target
	for rows.Next() {
		var t target
		var events string
		if err := rows.Scan(&t.id, &events); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(events), &t.events); err != nil {
			return nil, fmt.Errorf("subscription %q: events: %w", t.id, err)
		}
		t.all = slices.Contains(t.events, store.AllEvents)
		subs = append(subs, t)
	}
	return subs, rows.Err()
}

const deliveryColumns = `d.id, d.event_id, e.type, d.subscription_id, d.status, d.attempts, d.step, d.next_attempt_at,
	d.last_status_code, d.last_error, d.created_at, d.updated_at, d.finished_at`

func scanDelivery(row scanner) (*store.Delivery, error) {
	var (
		d                    store.Delivery
		status               string
		next, finished       sql.NullInt64
		createdAt, updatedAt int64
	)
	if err := row.Scan(&d.ID, &d.EventID, &d.EventType, &d.SubscriptionID, &status, &d.Attempts, &d.Step, &next,
		&d.LastStatusCode, &d.LastError, &createdAt, &updatedAt, &finished); err != nil {
		return nil, err
	}
	d.Status = store.DeliveryStatus(status)
	d.NextAttemptAt, d.FinishedAt = fromNanos(next), fromNanos(finished)
	d.CreatedAt, d.UpdatedAt = time.Unix(0, createdAt).UTC(), time.Unix(0, updatedAt).UTC()
	return &d, nil
}

// ClaimDeliveries leases due deliveries.
func (s *Store) ClaimDeliveries(ctx context.Context, opts store.ClaimOptions) ([]*store.Claim, error) {
	if opts.Limit <= 0 {
		return nil, nil
	}
	var claims []*store.Claim
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		claims = nil
		now := opts.Now.UnixNano()
		query, args := claimSQL, []any{opts.LeaseUntil.UnixNano(), now, now}
		if len(opts.Skip) > 0 {
			query = `UPDATE deliveries SET lease_until = ? WHERE id IN (` + claimSelect +
				" AND d.subscription_id NOT IN (" + placeholders(len(opts.Skip)) + ")" + claimReturning
			for _, id := range opts.Skip {
				args = append(args, id)
			}
		}
		args = append(args, opts.Limit)
		claim, err := s.stmt(ctx, tx, query)
		if err != nil {
			return err
		}
		rows, err := claim.QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var (
				d                    store.Delivery
				status               string
				next                 sql.NullInt64
				createdAt, updatedAt int64
			)
			if err := rows.Scan(&d.ID, &d.EventID, &d.SubscriptionID, &status, &d.Attempts, &d.Step, &next,
				&d.LastStatusCode, &d.LastError, &createdAt, &updatedAt); err != nil {
				rows.Close()
				return err
			}
			d.Status, d.NextAttemptAt = store.DeliveryStatus(status), fromNanos(next)
			d.CreatedAt, d.UpdatedAt = time.Unix(0, createdAt).UTC(), time.Unix(0, updatedAt).UTC()
			claims = append(claims, &store.Claim{Delivery: &d})
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(claims) == 0 {
			return err
		}
		event, err := s.stmt(ctx, tx, claimedEventSQL)
		if err != nil {
			return err
		}
		subs := make(map[string]*store.Subscription)
		for _, c := range claims {
			ev := &store.Event{ID: c.Delivery.EventID}
			var recv int64
			if err := event.QueryRowContext(ctx, ev.ID).Scan(&ev.Type, &ev.Payload, &ev.TraceParent, &recv); err != nil {
				return fmt.Errorf("event %q: %w", ev.ID, err)
			}
			ev.ReceivedAt = time.Unix(0, recv).UTC()
			c.Event, c.Delivery.EventType = ev, ev.Type
			sub, ok := subs[c.Delivery.SubscriptionID]
			if !ok {
				if sub, err = s.txSubscription(ctx, tx, c.Delivery.SubscriptionID); err != nil {
					return err
				}
				subs[sub.ID] = sub
			}
			c.Subscription = sub
		}
		sort.SliceStable(claims, func(i, j int) bool {
			return claims[i].Delivery.NextAttemptAt.Before(*claims[j].Delivery.NextAttemptAt)
		})
		return nil
	})
	return claims, err
}

// txSubscription reads a subscription inside a write transaction.
func (s *Store) txSubscription(ctx context.Context, tx *sql.Tx, id string) (*store.Subscription, error) {
	st, err := s.stmt(ctx, tx, selectSubscriptionSQL)
	if err != nil {
		return nil, err
	}
	sub, err := scanSubscription(st.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("subscription %q: %w", id, store.ErrNotFound)
	}
	return sub, err
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// CompleteDeliveries records outcomes.
func (s *Store) CompleteDeliveries(ctx context.Context, outcomes []*store.Outcome, policy store.ErrorPolicy, now time.Time) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		insertAttempt, err := s.stmt(ctx, tx, insertAttemptSQL)
		if err != nil {
			return err
		}
		complete, err := s.stmt(ctx, tx, completeDeliverySQL)
		if err != nil {
			return err
		}
		subs := make(map[string]*store.Subscription)
		changed := make(map[string]bool)
		at := now.UnixNano()
		for _, o := range outcomes {
			var last store.Attempt
			for _, a := range o.Attempts {
				if _, err := insertAttempt.ExecContext(ctx, o.DeliveryID, a.At.UnixNano(), int64(a.Duration),
					a.StatusCode, a.Error, a.ResponseBody, a.TraceID); err != nil {
					return err
				}
				last = a
			}
			status, step, next, finished := store.Failed, 0, any(nil), any(at)
			switch {
			case o.Succeeded:
				status = store.Succeeded
			case o.NextAttemptAt != nil:
				status, step, next, finished = store.Pending, 1, o.NextAttemptAt.UnixNano(), nil
			}
			if _, err := complete.ExecContext(ctx, status, len(o.Attempts), step, next, last.StatusCode, last.Error,
				at, finished, o.DeliveryID); err != nil {
				return err
			}

			sub, seen := subs[o.SubscriptionID]
			if !seen {
				sub, err = s.txSubscription(ctx, tx, o.SubscriptionID)
				if errors.Is(err, store.ErrNotFound) {
					subs[o.SubscriptionID] = nil // deleted meanwhile
					continue
				}
				if err != nil {
					return err
				}
				subs[o.SubscriptionID] = sub
			}
			if sub != nil && store.ApplyOutcome(sub, o, policy, now) {
				changed[sub.ID] = true
			}
		}
		for id := range changed {
			sub := subs[id]
			sub.UpdatedAt = now
			if err := s.updateSubscription(ctx, tx, sub); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReleaseDeliveries ends leases.
func (s *Store) ReleaseDeliveries(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	_, err := s.write.ExecContext(ctx, "UPDATE deliveries SET lease_until = 0 WHERE id IN ("+placeholders(len(ids))+")", args...)
	return err
}

// RecoverLeases releases every lease: one process owns a SQLite file, so any lease found at
// start belongs to a process that is gone (a crash, a kill -9).
func (s *Store) RecoverLeases(ctx context.Context) error {
	_, err := s.write.ExecContext(ctx, "UPDATE deliveries SET lease_until = 0 WHERE lease_until != 0")
	return err
}

// NextDue returns when the earliest pending delivery is due.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	var next sql.NullInt64
	// Leased deliveries are in flight: their next attempt is not due.
	err := s.read.QueryRowContext(ctx, "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending' AND lease_until = 0").Scan(&next)
	if err != nil || !next.Valid {
		return time.Time{}, false, err
	}
	return time.Unix(0, next.Int64).UTC(), true, nil
}

// GetEvent returns an event and its deliveries.
func (s *Store) GetEvent(ctx context.Context, id string) (*store.Event, []*store.Delivery, error) {
	var ev store.Event
	var recv int64
	err := s.read.QueryRowContext(ctx, "SELECT id, type, payload, traceparent, deliveries, received_at FROM events WHERE id = ?", id).
		Scan(&ev.ID, &ev.Type, &ev.Payload, &ev.TraceParent, &ev.Deliveries, &recv)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("event %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, nil, err
	}
	ev.ReceivedAt = time.Unix(0, recv).UTC()
	rows, err := s.read.QueryContext(ctx, "SELECT "+deliveryColumns+
		" FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.event_id = ? ORDER BY d.created_at, d.id", id)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var ds []*store.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, nil, err
		}
		ds = append(ds, d)
	}
	return &ev, ds, rows.Err()
}

func getDelivery(ctx context.Context, q queryer, id string) (*store.Delivery, error) {
	d, err := scanDelivery(q.QueryRowContext(ctx, "SELECT "+deliveryColumns+
		" FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("delivery %q: %w", id, store.ErrNotFound)
	}
	return d, err
}

// GetDelivery returns a delivery and its attempts.
func (s *Store) GetDelivery(ctx context.Context, id string) (*store.Delivery, []store.Attempt, error) {
	d, err := getDelivery(ctx, s.read, id)
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.read.QueryContext(ctx, `SELECT attempted_at, duration, status_code, error, response_body, trace_id
		FROM attempts WHERE delivery_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var attempts []store.Attempt
	for rows.Next() {
		var a store.Attempt
		var at, dur int64
		if err := rows.Scan(&at, &dur, &a.StatusCode, &a.Error, &a.ResponseBody, &a.TraceID); err != nil {
			return nil, nil, err
		}
		a.At, a.Duration = time.Unix(0, at).UTC(), time.Duration(dur)
		attempts = append(attempts, a)
	}
	return d, attempts, rows.Err()
}

// ListDeliveries returns a subscription's deliveries, newest first.
func (s *Store) ListDeliveries(ctx context.Context, subscriptionID string, status store.DeliveryStatus, opts store.ListOptions) ([]*store.Delivery, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	query := "SELECT " + deliveryColumns + " FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.subscription_id = ?"
	args := []any{subscriptionID}
	if status != "" {
		query += " AND d.status = ?"
		args = append(args, string(status))
	}
	if opts.After != "" {
		var createdAt int64
		err := s.read.QueryRowContext(ctx, "SELECT created_at FROM deliveries WHERE id = ?", opts.After).Scan(&createdAt)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("delivery %q: %w", opts.After, store.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		query += " AND (d.created_at, d.id) < (?, ?)"
		args = append(args, createdAt, opts.After)
	}
	query += " ORDER BY d.created_at DESC, d.id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ds []*store.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// RetryDelivery makes a delivery pending and due at now.
func (s *Store) RetryDelivery(ctx context.Context, id string, now time.Time) (*store.Delivery, error) {
	var d *store.Delivery
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		at := now.UnixNano()
		res, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = 'pending', next_attempt_at = ?, lease_until = 0,
			finished_at = NULL, updated_at = ? WHERE id = ?`, at, at, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("delivery %q: %w", id, store.ErrNotFound)
		}
		d, err = getDelivery(ctx, tx, id)
		return err
	})
	return d, err
}

// Prune deletes finished deliveries and old events.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		at := cutoff.UnixNano()
		res, err := tx.ExecContext(ctx, "DELETE FROM deliveries WHERE status != 'pending' AND finished_at < ?", at)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		_, err = tx.ExecContext(ctx, `DELETE FROM events WHERE received_at < ?
			AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)`, at)
		return err
	})
	return int(n), err
}

// failPending fails the pending deliveries that where (a condition on deliveries) selects.
func failPending(ctx context.Context, tx *sql.Tx, where string, arg any, reason string) error {
	at := time.Now().UnixNano()
	_, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = 0,
		last_error = ?, updated_at = ?, finished_at = ? WHERE status = 'pending' AND `+where, reason, at, at, arg)
	return err
}

// Stats returns counts for monitoring.
func (s *Store) Stats(ctx context.Context, now time.Time) (store.Stats, error) {
	var st store.Stats
	var oldest sql.NullInt64
	at := now.UnixNano()
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*),
		MIN(CASE WHEN d.next_attempt_at <= ? AND d.lease_until <= ? THEN d.next_attempt_at END)
		FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
		WHERE d.status = 'pending' AND s.active = 1`, at, at).Scan(&st.Pending, &oldest)
	if err != nil {
		return st, err
	}
	if oldest.Valid {
		st.OldestDue = time.Unix(0, oldest.Int64).UTC()
	}
	err = s.read.QueryRowContext(ctx, `SELECT
		COALESCE(SUM(active = 1 AND in_error_state = 0), 0),
		COALESCE(SUM(active = 1 AND in_error_state = 1), 0),
		COALESCE(SUM(active = 0), 0) FROM subscriptions`).Scan(&st.Active, &st.InErrorState, &st.Inactive)
	return st, err
}
