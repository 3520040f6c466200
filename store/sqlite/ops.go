package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/webhookgw/gateway/store"
)

// Operating deliveries: listing across subscriptions, bulk recovery and replay.

// ListDeliveries returns the deliveries filter selects, newest first. Across subscriptions it
// walks deliveries_created; for one, deliveries_subscription.
func (s *Store) ListDeliveries(ctx context.Context, filter store.DeliveryFilter, opts store.ListOptions) ([]*store.Delivery, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	var (
		where []string
		args  []any
	)
	add := func(cond string, v ...any) {
		where = append(where, cond)
		args = append(args, v...)
	}
	if filter.SubscriptionID != "" {
		add("d.subscription_id = ?", filter.SubscriptionID)
	}
	if filter.Status != "" {
		add("d.status = ?", string(filter.Status))
	}
	if filter.EventType != "" {
		add("e.type = ?", filter.EventType)
	}
	if !filter.Since.IsZero() {
		add("d.created_at >= ?", filter.Since.UnixNano())
	}
	if !filter.Until.IsZero() {
		add("d.created_at < ?", filter.Until.UnixNano())
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
		add("(d.created_at, d.id) < (?, ?)", createdAt, opts.After)
	}
	query := "SELECT " + deliveryColumns + " FROM deliveries d JOIN events e ON e.id = d.event_id"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
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

// RecoverDeliveries makes a subscription's failed deliveries of a window pending and due at
// now, in one transaction.
func (s *Store) RecoverDeliveries(ctx context.Context, subscriptionID string, since, until, now time.Time) (int, error) {
	var n int64
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		var active bool
		err := tx.QueryRowContext(ctx, "SELECT active FROM subscriptions WHERE id = ?", subscriptionID).Scan(&active)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("subscription %q: %w", subscriptionID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		end := int64(1<<63 - 1)
		if !until.IsZero() {
			end = until.UnixNano()
		}
		at := now.UnixNano()
		// Failed deliveries hold no lease (every way to fail one ends it), so no round is in
		// flight: they are made due at once, as RetryDelivery does, with a new token.
		res, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, lease_until = 0,
			finished_at = NULL, updated_at = ?1, paused = ?2, retry_requested = 0, lease_token = lease_token + 1
			WHERE subscription_id = ?3 AND status = 'failed' AND created_at >= ?4 AND created_at < ?5`,
			at, !active, subscriptionID, since.UnixNano(), end)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// ReplayEvent stores a new delivery of an event to a subscription, due at now.
func (s *Store) ReplayEvent(ctx context.Context, eventID, subscriptionID, deliveryID string, now time.Time) (*store.Delivery, error) {
	var d *store.Delivery
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var typ string
		err := tx.QueryRowContext(ctx, "SELECT type FROM events WHERE id = ?", eventID).Scan(&typ)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("event %q: %w", eventID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var active bool
		err = tx.QueryRowContext(ctx, "SELECT active FROM subscriptions WHERE id = ?", subscriptionID).Scan(&active)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("subscription %q: %w", subscriptionID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		at := now.UnixNano()
		_, err = tx.ExecContext(ctx, `INSERT INTO deliveries (id, event_id, subscription_id, status,
			next_attempt_at, created_at, updated_at, paused) VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4, ?5)`,
			deliveryID, eventID, subscriptionID, at, !active)
		if err != nil {
			if strings.Contains(err.Error(), "UNIQUE constraint failed") {
				return fmt.Errorf("delivery %q: %w", deliveryID, store.ErrExists)
			}
			return err
		}
		d, err = getDelivery(ctx, tx, deliveryID)
		return err
	})
	return d, err
}
