package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if filter.SubscriptionID != "" {
		where = append(where, "d.subscription_id = "+arg(filter.SubscriptionID))
	}
	if filter.Status != "" {
		where = append(where, "d.status = "+arg(string(filter.Status)))
	}
	if filter.EventType != "" {
		where = append(where, "e.type = "+arg(filter.EventType))
	}
	if !filter.Since.IsZero() {
		where = append(where, "d.created_at >= "+arg(filter.Since.UnixNano()))
	}
	if !filter.Until.IsZero() {
		where = append(where, "d.created_at < "+arg(filter.Until.UnixNano()))
	}
	if opts.After != "" {
		var createdAt int64
		err := s.pool.QueryRow(ctx, "SELECT created_at FROM deliveries WHERE id = $1", opts.After).Scan(&createdAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("delivery %q: %w", opts.After, store.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		where = append(where, "(d.created_at, d.id) < ("+arg(createdAt)+", "+arg(opts.After)+")")
	}
	query := "SELECT " + deliveryColumns + " FROM deliveries d JOIN events e ON e.id = d.event_id"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY d.created_at DESC, d.id DESC LIMIT " + arg(limit)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return collectDeliveries(rows)
}

// RecoverDeliveries makes a subscription's failed deliveries of a window pending and due at
// now, in one transaction. It locks the subscription's row (shared) before the deliveries',
// as RetryDelivery does, and the deliveries' in id order; it notifies the other replicas when
// it made any due.
func (s *Store) RecoverDeliveries(ctx context.Context, subscriptionID string, since, until, now time.Time) (int, error) {
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		var active bool
		err := tx.QueryRow(ctx, "SELECT active FROM subscriptions WHERE id = $1 FOR SHARE", subscriptionID).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("subscription %q: %w", subscriptionID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		end := int64(1<<63 - 1)
		if !until.IsZero() {
			end = until.UnixNano()
		}
		// Failed deliveries hold no lease (every way to fail one ends it), so no round is in
		// flight: they are made due at once, as RetryDelivery does, with a new token.
		tag, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = 0,
			finished_at = NULL, updated_at = $1, paused = $2, retry_requested = false, lease_token = lease_token + 1
			WHERE id IN (SELECT id FROM deliveries WHERE subscription_id = $3 AND status = 'failed'
				AND created_at >= $4 AND created_at < $5 ORDER BY id FOR UPDATE)
			AND status = 'failed'`,
			now.UnixNano(), !active, subscriptionID, since.UnixNano(), end)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		if n > 0 && active {
			return s.notifyDue(ctx, tx)
		}
		return nil
	})
	return int(n), err
}

// ReplayEvent stores a new delivery of an event to a subscription, due at now. It locks the
// subscription's row (shared), so that it is not deleted or deactivated meanwhile, and
// notifies the other replicas when the delivery is due.
func (s *Store) ReplayEvent(ctx context.Context, eventID, subscriptionID, deliveryID string, now time.Time) (*store.Delivery, error) {
	var d *store.Delivery
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var active bool
		err := tx.QueryRow(ctx, "SELECT active FROM subscriptions WHERE id = $1 FOR SHARE", subscriptionID).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("subscription %q: %w", subscriptionID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var typ string
		err = tx.QueryRow(ctx, "SELECT type FROM events WHERE id = $1 FOR SHARE", eventID).Scan(&typ)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("event %q: %w", eventID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		at := now.UnixNano()
		_, err = tx.Exec(ctx, `INSERT INTO deliveries (id, event_id, subscription_id, status, next_attempt_at,
			created_at, updated_at, paused) VALUES ($1, $2, $3, 'pending', $4, $4, $4, $5)`,
			deliveryID, eventID, subscriptionID, at, !active)
		if uniqueViolation(err) {
			return fmt.Errorf("delivery %q: %w", deliveryID, store.ErrExists)
		}
		if err != nil {
			return err
		}
		if active {
			if err := s.notifyDue(ctx, tx); err != nil {
				return err
			}
		}
		d, err = getDelivery(ctx, tx, deliveryID)
		return err
	})
	return d, err
}
