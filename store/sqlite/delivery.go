package sqlite

import (
	"cmp"
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
func (s *Store) IngestEvents(ctx context.Context, events []*store.Event, opts store.IngestOptions) ([]store.IngestResult, error) {
	until := opts.LeaseUntil.UnixNano()
	results := make([]store.IngestResult, len(events))
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		fanout, err := s.fanoutIndex(ctx, tx)
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
			targets := fanout.targets(ev.Type)
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
			r := store.IngestResult{ID: ev.ID, Type: ev.Type, Deliveries: len(targets), Targets: targets}
			for _, subID := range targets {
				id := opts.NewID()
				leased := opts.Lease != nil && opts.Lease(subID)
				var leaseUntil, token int64
				if leased {
					leaseUntil, token = until, 1
				}
				if _, err := insertDelivery.ExecContext(ctx, id, ev.ID, subID, at, at, at, leaseUntil, token); err != nil {
					return err
				}
				if leased {
					r.Claims = append(r.Claims, bornClaim(id, ev, subID, token))
				}
			}
			results[i] = r
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// bornClaim is the claim of a delivery leased as it is stored, as a claim query would return it.
func bornClaim(id string, ev *store.Event, subID string, token int64) *store.Claim {
	at := ev.ReceivedAt.UTC()
	return &store.Claim{
		Delivery: &store.Delivery{ID: id, EventID: ev.ID, EventType: ev.Type, SubscriptionID: subID,
			Status: store.Pending, NextAttemptAt: &at, CreatedAt: at, UpdatedAt: at},
		Event: ev,
		Token: token,
	}
}

const (
	insertEventSQL = `INSERT INTO events (id, type, payload, traceparent, deliveries, received_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	insertDeliverySQL = `INSERT INTO deliveries (id, event_id, subscription_id, status,
		next_attempt_at, created_at, updated_at, lease_until, lease_token) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?)`
	duplicateEventSQL      = "SELECT type, deliveries FROM events WHERE id = ?"
	activeSubscriptionsSQL = "SELECT id, events FROM subscriptions WHERE active = 1 ORDER BY created_at, id"
	claimedEventSQL        = "SELECT type, payload, traceparent, received_at FROM events WHERE id = ?"
	insertAttemptSQL       = `INSERT INTO attempts (delivery_id, attempted_at, duration,
		status_code, error, response_body, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?)`
	// completeDeliverySQL applies an outcome while the claim's token holds. A retry asked for
	// during the round (retry_requested) makes the delivery due again at once instead, unless
	// its subscription is gone (?11 false).
	completeDeliverySQL = `UPDATE deliveries SET
		status = CASE WHEN retry_requested = 1 AND ?11 THEN 'pending' ELSE ?1 END,
		attempts = attempts + ?2, step = step + ?3,
		next_attempt_at = CASE WHEN retry_requested = 1 AND ?11 THEN ?7 ELSE ?4 END,
		lease_until = 0, last_status_code = ?5, last_error = ?6, updated_at = ?7,
		finished_at = CASE WHEN retry_requested = 1 AND ?11 THEN NULL ELSE ?8 END,
		retry_requested = 0
		WHERE id = ?9 AND lease_token = ?10 AND status = 'pending'`
	// staleAttemptsSQL counts the attempts of a stale outcome, which are recorded as they
	// happened although the outcome is not applied.
	staleAttemptsSQL = "UPDATE deliveries SET attempts = attempts + ? WHERE id = ?"

	claimReturning = ` RETURNING id, event_id, subscription_id, status, attempts, step, next_attempt_at,
		last_status_code, last_error, created_at, updated_at, lease_token`
	// keepRetryRequested is how a claim treats retry_requested: a new round serves a retry
	// asked for while an earlier one was in flight, unless it takes over a lease that ran out
	// (lease_until not 0), whose round may still be running and must not lose the request.
	keepRetryRequested = `retry_requested = CASE WHEN lease_until = 0 THEN 0 ELSE retry_requested END`
	// claimSQL leases one subscription's due deliveries, the longest due first.
	claimSQL = `UPDATE deliveries SET lease_until = ?1, lease_token = lease_token + 1, ` + keepRetryRequested + ` WHERE id IN (
		SELECT id FROM deliveries WHERE subscription_id = ?2 AND status = 'pending' AND paused = 0
		AND next_attempt_at <= ?3 AND lease_until <= ?3 ORDER BY next_attempt_at LIMIT ?4)` + claimReturning
	// nextDueSQL is when a subscription's earliest unleased pending delivery is due.
	nextDueSQL = `SELECT next_attempt_at FROM deliveries WHERE subscription_id = ? AND status = 'pending'
		AND paused = 0 AND lease_until <= ? ORDER BY next_attempt_at LIMIT 1`
	// fifoHeadSQL is a subscription's oldest pending delivery, in ingest order.
	fifoHeadSQL = `SELECT id, next_attempt_at, lease_until FROM deliveries WHERE subscription_id = ?
		AND status = 'pending' AND paused = 0 ORDER BY created_at, rowid LIMIT 1`
	claimOneSQL = `UPDATE deliveries SET lease_until = ?, lease_token = lease_token + 1, ` + keepRetryRequested + `
		WHERE id = ?` + claimReturning
	releaseSQL = "UPDATE deliveries SET lease_until = 0 WHERE id = ? AND lease_token = ?"
	// extendSQL moves a lease still held: not ended by a completion, a release or RecoverLeases
	// (all of which set lease_until to 0), nor taken over.
	extendSQL = `UPDATE deliveries SET lease_until = ? WHERE id = ? AND lease_token = ? AND status = 'pending'
		AND lease_until != 0`
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

// fanout is an index of the active subscriptions by event type, so that ingest does not read
// and decode every subscription for every batch. It is made from the store inside an ingest
// transaction and kept until a subscription write makes it stale (see staleFanout); it is only
// used under the writer's connection, which orders its uses.
type fanout struct {
	subs   []target            // in creation order
	byType map[string][]string // the ids each type fans out to, made on first use
}

// targets returns the ids of the subscriptions an event of eventType fans out to, in creation
// order. The slice is shared: callers do not change it.
func (f *fanout) targets(eventType string) []string {
	ids, ok := f.byType[eventType]
	if !ok {
		for _, t := range f.subs {
			if t.matches(eventType) {
				ids = append(ids, t.id)
			}
		}
		f.byType[eventType] = ids
	}
	return ids
}

// fanoutIndex returns the fan-out index, made again from tx when a subscription write has made
// it stale.
func (s *Store) fanoutIndex(ctx context.Context, tx *sql.Tx) (*fanout, error) {
	if f := s.fanout.Load(); f != nil {
		return f, nil
	}
	subs, err := s.activeSubscriptions(ctx, tx)
	if err != nil {
		return nil, err
	}
	f := &fanout{subs: subs, byType: make(map[string][]string)}
	s.fanout.Store(f)
	return f, nil
}

// staleFanout drops the fan-out index. Writers of subscriptions call it inside their
// transaction, before they change them (an ingest combined into the same transaction after them
// makes the index again from what that transaction sees; a commit that fails drops it), and once
// more after it for writes made outside one.
func (s *Store) staleFanout() { s.fanout.Store(nil) }

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

// ClaimDeliveries leases due deliveries, subscription by subscription.
func (s *Store) ClaimDeliveries(ctx context.Context, opts store.ClaimOptions) (store.ClaimResult, error) {
	var res store.ClaimResult
	if len(opts.Subscriptions) == 0 {
		return res, nil
	}
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res = store.ClaimResult{NextDue: make(map[string]time.Time)}
		now, until := opts.Now.UnixNano(), opts.LeaseUntil.UnixNano()
		for _, sc := range opts.Subscriptions {
			if sc.Limit <= 0 {
				continue
			}
			var (
				claims []*store.Claim
				err    error
			)
			if sc.FIFO {
				claims, err = s.claimHead(ctx, tx, sc.ID, now, until, res.NextDue)
			} else {
				claims, err = s.claimDue(ctx, tx, sc, now, until, res.NextDue)
			}
			if err != nil {
				return fmt.Errorf("subscription %q: %w", sc.ID, err)
			}
			res.Claims = append(res.Claims, claims...)
		}
		if len(res.Claims) == 0 {
			return nil
		}
		event, err := s.stmt(ctx, tx, claimedEventSQL)
		if err != nil {
			return err
		}
		for _, c := range res.Claims {
			ev := &store.Event{ID: c.Delivery.EventID}
			var recv int64
			if err := event.QueryRowContext(ctx, ev.ID).Scan(&ev.Type, &ev.Payload, &ev.TraceParent, &recv); err != nil {
				return fmt.Errorf("event %q: %w", ev.ID, err)
			}
			ev.ReceivedAt = time.Unix(0, recv).UTC()
			c.Event, c.Delivery.EventType = ev, ev.Type
		}
		return nil
	})
	if err != nil {
		return store.ClaimResult{}, err
	}
	return res, nil
}

// claimDue leases up to sc.Limit due deliveries of one subscription; when it finds fewer, it
// notes in nextDue when the subscription's next unleased one is due.
func (s *Store) claimDue(ctx context.Context, tx *sql.Tx, sc store.SubscriptionClaim, now, until int64, nextDue map[string]time.Time) ([]*store.Claim, error) {
	claim, err := s.stmt(ctx, tx, claimSQL)
	if err != nil {
		return nil, err
	}
	rows, err := claim.QueryContext(ctx, until, sc.ID, now, sc.Limit)
	if err != nil {
		return nil, err
	}
	claims, err := scanClaims(rows)
	if err != nil {
		return nil, err
	}
	// RETURNING follows the update's order, not the subquery's.
	sort.SliceStable(claims, func(i, j int) bool {
		return claims[i].Delivery.NextAttemptAt.Before(*claims[j].Delivery.NextAttemptAt)
	})
	if len(claims) == sc.Limit {
		return claims, nil
	}
	// The rest is not due yet, or leased.
	next, err := s.stmt(ctx, tx, nextDueSQL)
	if err != nil {
		return nil, err
	}
	var at int64
	switch err := next.QueryRowContext(ctx, sc.ID, now).Scan(&at); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, err
	default:
		nextDue[sc.ID] = time.Unix(0, at).UTC()
	}
	return claims, nil
}

// claimHead leases a fifo subscription's oldest pending delivery if it is due and not leased.
func (s *Store) claimHead(ctx context.Context, tx *sql.Tx, sub string, now, until int64, nextDue map[string]time.Time) ([]*store.Claim, error) {
	head, err := s.stmt(ctx, tx, fifoHeadSQL)
	if err != nil {
		return nil, err
	}
	var (
		id           string
		due, leaseTo int64
	)
	switch err := head.QueryRowContext(ctx, sub).Scan(&id, &due, &leaseTo); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, err
	case leaseTo > now: // in flight
		return nil, nil
	case due > now:
		nextDue[sub] = time.Unix(0, due).UTC()
		return nil, nil
	}
	one, err := s.stmt(ctx, tx, claimOneSQL)
	if err != nil {
		return nil, err
	}
	rows, err := one.QueryContext(ctx, until, id)
	if err != nil {
		return nil, err
	}
	return scanClaims(rows)
}

// scanClaims reads the rows a claim statement returned, and closes them.
func scanClaims(rows *sql.Rows) ([]*store.Claim, error) {
	defer rows.Close()
	var claims []*store.Claim
	for rows.Next() {
		var (
			d                    store.Delivery
			c                    = &store.Claim{Delivery: &d}
			status               string
			next                 sql.NullInt64
			createdAt, updatedAt int64
		)
		if err := rows.Scan(&d.ID, &d.EventID, &d.SubscriptionID, &status, &d.Attempts, &d.Step, &next,
			&d.LastStatusCode, &d.LastError, &createdAt, &updatedAt, &c.Token); err != nil {
			return nil, err
		}
		d.Status, d.NextAttemptAt = store.DeliveryStatus(status), fromNanos(next)
		d.CreatedAt, d.UpdatedAt = time.Unix(0, createdAt).UTC(), time.Unix(0, updatedAt).UTC()
		claims = append(claims, c)
	}
	return claims, rows.Err()
}

// txSubscription reads a subscription inside a write transaction.
func (s *Store) txSubscription(ctx context.Context, tx *sql.Tx, id string) (*store.Subscription, error) {
	st, err := s.stmt(ctx, tx, selectSubscriptionSQL)
	if err != nil {
		return nil, err
	}
	sub, err := s.scanSubscription(st.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("subscription %q: %w", id, store.ErrNotFound)
	}
	return sub, err
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// CompleteDeliveries records outcomes, each while its claim's token holds.
func (s *Store) CompleteDeliveries(ctx context.Context, outcomes []*store.Outcome, policy store.ErrorPolicy, now time.Time) ([]string, error) {
	var stale []string
	changed := false
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		stale, changed = nil, false
		insertAttempt, err := s.stmt(ctx, tx, insertAttemptSQL)
		if err != nil {
			return err
		}
		complete, err := s.stmt(ctx, tx, completeDeliverySQL)
		if err != nil {
			return err
		}
		subs := make(map[string]*store.Subscription)
		dirty := make(map[string]store.Subscription) // changed subscriptions, as they were
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
			sub, seen := subs[o.SubscriptionID]
			if !seen {
				sub, err = s.txSubscription(ctx, tx, o.SubscriptionID)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				subs[o.SubscriptionID] = sub // nil: deleted meanwhile
			}
			status, step, next, finished := store.Failed, 0, any(nil), any(at)
			lastError := last.Error
			subscribed := sub != nil && !o.SubscriptionDeleted // a retry asked for may run
			switch {
			case o.Succeeded:
				status = store.Succeeded
			case !subscribed:
				lastError = cmp.Or(lastError, "subscription deleted")
			case o.Interrupted && o.NextAttemptAt != nil:
				status, next, finished = store.Pending, o.NextAttemptAt.UnixNano(), nil
			case o.NextAttemptAt != nil:
				status, step, next, finished = store.Pending, 1, o.NextAttemptAt.UnixNano(), nil
			}
			res, err := complete.ExecContext(ctx, status, len(o.Attempts), step, next, last.StatusCode, lastError,
				at, finished, o.DeliveryID, o.Token, subscribed)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				stale = append(stale, o.DeliveryID)
				if len(o.Attempts) > 0 {
					if _, err := tx.ExecContext(ctx, staleAttemptsSQL, len(o.Attempts), o.DeliveryID); err != nil {
						return err
					}
				}
				continue
			}
			if sub == nil || len(o.Attempts) == 0 || o.Interrupted {
				continue
			}
			before := *sub
			if store.ApplyOutcome(sub, o, policy, now) {
				if _, ok := dirty[sub.ID]; !ok {
					dirty[sub.ID] = before
				}
			}
		}
		for id, before := range dirty {
			sub := subs[id]
			if err := s.updateSubscription(ctx, tx, sub); err != nil {
				return err
			}
			if sub.Active != before.Active {
				s.staleFanout()
				if err := setPaused(ctx, tx, id, !sub.Active); err != nil {
					return err
				}
			}
			if sub.Active != before.Active || sub.InErrorState != before.InErrorState {
				changed = true
				s.subscriptionsChanging()
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		s.generation.Add(1)
	}
	return stale, nil
}

// setPaused takes a subscription's pending deliveries off the due path (an inactive one's) or
// puts them back.
func setPaused(ctx context.Context, tx *sql.Tx, subID string, paused bool) error {
	_, err := tx.ExecContext(ctx, "UPDATE deliveries SET paused = ? WHERE subscription_id = ? AND status = 'pending'", paused, subID)
	return err
}

// ReleaseDeliveries ends leases whose tokens still hold.
func (s *Store) ReleaseDeliveries(ctx context.Context, leases []store.Lease) error {
	if len(leases) == 0 {
		return nil
	}
	return s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		release, err := s.stmt(ctx, tx, releaseSQL)
		if err != nil {
			return err
		}
		for _, l := range leases {
			if _, err := release.ExecContext(ctx, l.DeliveryID, l.Token); err != nil {
				return err
			}
		}
		return nil
	})
}

// ExtendLeases moves leases whose tokens still hold to until.
func (s *Store) ExtendLeases(ctx context.Context, leases []store.Lease, until time.Time) ([]string, error) {
	if len(leases) == 0 {
		return nil, nil
	}
	var lost []string
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		lost = nil
		extend, err := s.stmt(ctx, tx, extendSQL)
		if err != nil {
			return err
		}
		for _, l := range leases {
			res, err := extend.ExecContext(ctx, until.UnixNano(), l.DeliveryID, l.Token)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				lost = append(lost, l.DeliveryID)
			}
		}
		return nil
	})
	return lost, err
}

// RecoverLeases releases every lease: one process owns a SQLite file, so any lease found at
// start belongs to a process that is gone (a crash, a kill -9).
func (s *Store) RecoverLeases(ctx context.Context) error {
	_, err := s.write.ExecContext(ctx, "UPDATE deliveries SET lease_until = 0 WHERE lease_until != 0")
	return s.noteWrite(err)
}

// DueSubscriptions returns when each subscription's earliest unleased pending delivery is due.
func (s *Store) DueSubscriptions(ctx context.Context, now time.Time) (map[string]time.Time, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT subscription_id, MIN(next_attempt_at) FROM deliveries
		WHERE status = 'pending' AND paused = 0 AND lease_until <= ? GROUP BY subscription_id`, now.UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	due := make(map[string]time.Time)
	for rows.Next() {
		var id string
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, err
		}
		due[id] = time.Unix(0, at).UTC()
	}
	return due, rows.Err()
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

// RetryDelivery makes a delivery pending and due at now, or marks a leased one.
func (s *Store) RetryDelivery(ctx context.Context, id string, now time.Time) (*store.Delivery, error) {
	var d *store.Delivery
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		at := now.UnixNano()
		var (
			status     string
			leaseUntil int64
			active     sql.NullBool
		)
		err := tx.QueryRowContext(ctx, `SELECT d.status, d.lease_until, s.active FROM deliveries d
			LEFT JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id = ?`, id).Scan(&status, &leaseUntil, &active)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("delivery %q: %w", id, store.ErrNotFound)
		case err != nil:
			return err
		case !active.Valid:
			return fmt.Errorf("delivery %q: %w", id, store.ErrSubscriptionGone)
		}
		if status == string(store.Pending) && leaseUntil > at {
			// A round is in flight: its completion makes the delivery due again.
			_, err = tx.ExecContext(ctx, "UPDATE deliveries SET retry_requested = 1, updated_at = ? WHERE id = ?", at, id)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE deliveries SET status = 'pending', next_attempt_at = ?, lease_until = 0,
				finished_at = NULL, updated_at = ?, paused = ?, retry_requested = 0,
				lease_token = lease_token + 1 WHERE id = ?`, at, at, !active.Bool, id)
		}
		if err != nil {
			return err
		}
		d, err = getDelivery(ctx, tx, id)
		return err
	})
	return d, err
}

// Prune deletes a bounded batch of finished deliveries and old events.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, max int) (int, bool, error) {
	var deliveries, events int64
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		at := cutoff.UnixNano()
		res, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries
			WHERE status != 'pending' AND finished_at < ? LIMIT ?)`, at, max)
		if err != nil {
			return err
		}
		deliveries, _ = res.RowsAffected()
		res, err = tx.ExecContext(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events e WHERE received_at < ?
			AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?)`, at, max)
		if err != nil {
			return err
		}
		events, _ = res.RowsAffected()
		return nil
	})
	return int(deliveries), deliveries >= int64(max) || events >= int64(max), err
}

// failPending fails a deleted subscription's pending deliveries that are not leased at now;
// a leased one's round records what happened when it completes.
func failPending(ctx context.Context, tx *sql.Tx, subID, reason string, now time.Time) error {
	at := now.UnixNano()
	_, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = 0,
		last_error = ?, updated_at = ?, finished_at = ? WHERE subscription_id = ? AND status = 'pending' AND lease_until <= ?`,
		reason, at, at, subID, at)
	return err
}

// Stats returns counts for monitoring.
func (s *Store) Stats(ctx context.Context, now time.Time) (store.Stats, error) {
	var st store.Stats
	var oldest sql.NullInt64
	at := now.UnixNano()
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*),
		MIN(CASE WHEN next_attempt_at <= ? AND lease_until <= ? THEN next_attempt_at END)
		FROM deliveries WHERE status = 'pending' AND paused = 0`, at, at).Scan(&st.Pending, &oldest)
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
