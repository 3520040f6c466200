package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookgw/gateway/store"
)

// IngestEvents stores events and their deliveries in one transaction of a few round trips,
// whatever the number of events: the fan-outs of the events' types in one pipelined batch, the
// events in one statement, then their deliveries in one. It notifies the other replicas when it
// stored deliveries it did not lease at birth. It asks opts.Lease only about subscriptions with
// no limit of their own to hold across replicas (no max_in_flight, no rate_limit, not fifo):
// those are counted in the claim, under the subscription's row lock.
func (s *Store) IngestEvents(ctx context.Context, events []*store.Event, opts store.IngestOptions) ([]store.IngestResult, error) {
	results := make([]store.IngestResult, len(events))
	until := opts.LeaseUntil.UnixNano()
	err := s.inTxOnce(ctx, func(tx pgx.Tx) error {
		targets := make(map[string][]fanTarget) // by event type, read once a transaction
		b := &pgx.Batch{}
		for _, ev := range events {
			if _, ok := targets[ev.Type]; ok {
				continue
			}
			targets[ev.Type] = nil
			b.Queue(fanOutSQL, ev.Type).Query(func(rows pgx.Rows) error {
				subs, err := collectFanOut(rows)
				targets[ev.Type] = subs
				return err
			})
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}

		first := make(map[string]int, len(events)) // the index of each id's first event
		var e struct {                             // the events with new ids, as insertEventsSQL takes them
			ids, types, traceParents []string
			payloads                 [][]byte
			counts                   []int32
			at                       []int64
		}
		for i, ev := range events {
			if _, ok := first[ev.ID]; ok {
				continue
			}
			first[ev.ID] = i
			e.ids, e.types, e.traceParents = append(e.ids, ev.ID), append(e.types, ev.Type), append(e.traceParents, ev.TraceParent)
			e.payloads, e.counts = append(e.payloads, ev.Payload), append(e.counts, int32(len(targets[ev.Type])))
			e.at = append(e.at, ev.ReceivedAt.UnixNano())
		}
		inserted := make(map[string]bool, len(e.ids))
		rows, err := tx.Query(ctx, insertEventsSQL, e.ids, e.types, e.payloads, e.traceParents, e.counts, e.at)
		if err != nil {
			return err
		}
		var id string
		if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
			inserted[id] = true
			return nil
		}); err != nil {
			return err
		}

		var (
			dups                   []string // stored before this transaction
			ids, eventIDs, subIDs  []string
			at, leaseUntil, tokens []int64
			unleased               int
		)
		for i, ev := range events {
			switch f := first[ev.ID]; {
			case f != i && inserted[ev.ID]: // a duplicate of an earlier event of this batch
				results[i] = store.IngestResult{ID: ev.ID, Type: results[f].Type, Deliveries: results[f].Deliveries, Duplicate: true}
				continue
			case !inserted[ev.ID]:
				dups = append(dups, ev.ID)
				continue
			}
			subs := targets[ev.Type]
			r := store.IngestResult{ID: ev.ID, Type: ev.Type, Deliveries: len(subs)}
			for _, sub := range subs {
				id := opts.NewID()
				r.Targets = append(r.Targets, sub.id)
				var lease, token int64
				if sub.leasable && opts.Lease != nil && opts.Lease(sub.id) {
					lease, token = until, 1
					r.Claims = append(r.Claims, bornClaim(id, ev, sub.id, 1))
				} else {
					unleased++
				}
				ids, eventIDs, subIDs = append(ids, id), append(eventIDs, ev.ID), append(subIDs, sub.id)
				at, leaseUntil, tokens = append(at, ev.ReceivedAt.UnixNano()), append(leaseUntil, lease), append(tokens, token)
			}
			results[i] = r
		}
		b = &pgx.Batch{}
		if len(dups) > 0 {
			b.Queue(duplicateEventsSQL, dups).Query(func(rows pgx.Rows) error {
				var (
					id, typ string
					n       int
				)
				stored := make(map[string]store.IngestResult, len(dups))
				if _, err := pgx.ForEachRow(rows, []any{&id, &typ, &n}, func() error {
					stored[id] = store.IngestResult{ID: id, Type: typ, Deliveries: n, Duplicate: true}
					return nil
				}); err != nil {
					return err
				}
				for i, ev := range events {
					if !inserted[ev.ID] {
						r, ok := stored[ev.ID]
						if !ok { // deleted (pruned) since its insert conflicted: as a lost row would
							return fmt.Errorf("event %q: %w", ev.ID, pgx.ErrNoRows)
						}
						results[i] = r
					}
				}
				return nil
			})
		}
		if len(ids) > 0 {
			b.Queue(insertDeliveriesSQL, ids, eventIDs, subIDs, at, leaseUntil, tokens)
		}
		if unleased > 0 {
			b.Queue(notifyDueSQL, s.dueChannel, s.origin)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

const (
	// insertEventsSQL stores events with new ids, and returns those ids.
	insertEventsSQL = `INSERT INTO events (id, type, payload, traceparent, deliveries, received_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::integer[], $6::bigint[])
		ON CONFLICT (id) DO NOTHING RETURNING id`
	// insertDeliveriesSQL stores deliveries, due at once, in the order given (seq follows it).
	insertDeliveriesSQL = `INSERT INTO deliveries (id, event_id, subscription_id, status, next_attempt_at, created_at, updated_at,
		lease_until, lease_token)
		SELECT d.id, d.event_id, d.subscription_id, 'pending', d.at, d.at, d.at, d.lease_until, d.lease_token
		FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
		AS d (id, event_id, subscription_id, at, lease_until, lease_token)`
	duplicateEventsSQL = "SELECT id, type, deliveries FROM events WHERE id = ANY($1)"
	// fanOutSQL is the active subscriptions an event type fans out to, in creation order.
	fanOutSQL = `SELECT id, max_in_flight = 0 AND rate_limit = 0 AND ordering = '' FROM subscriptions WHERE active
		AND (events::jsonb @> jsonb_build_array($1::text) OR events::jsonb @> '["*"]') ORDER BY created_at, id`
)

// collectFanOut reads the rows of fanOutSQL: the active subscriptions an event type fans out
// to, in creation order. They are read in the ingest's transaction, so that it never uses a
// stale list (another replica may have changed them a moment ago). A subscription deactivated
// while the ingest runs may still get a delivery: the claim pauses it (see ClaimDeliveries).
func collectFanOut(rows pgx.Rows) ([]fanTarget, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (fanTarget, error) {
		var t fanTarget
		err := row.Scan(&t.id, &t.leasable)
		return t, err
	})
}

// fanTarget is a subscription an event fans out to; leasable says no limit of its own must
// hold across replicas, so a delivery to it may be leased at birth.
type fanTarget struct {
	id       string
	leasable bool
}

// bornClaim is the claim of a delivery leased as it is stored, as a claim would return it.
func bornClaim(id string, ev *store.Event, subID string, token int64) *store.Claim {
	at := ev.ReceivedAt.UTC()
	return &store.Claim{
		Delivery: &store.Delivery{ID: id, EventID: ev.ID, EventType: ev.Type, SubscriptionID: subID,
			Status: store.Pending, NextAttemptAt: &at, CreatedAt: at, UpdatedAt: at},
		Event: ev,
		Token: token,
	}
}

const deliveryColumns = `d.id, d.event_id, e.type, d.subscription_id, d.status, d.attempts, d.step, d.next_attempt_at,
	d.last_status_code, d.last_error, d.created_at, d.updated_at, d.finished_at`

func scanDelivery(row pgx.Row) (*store.Delivery, error) {
	var (
		d                    store.Delivery
		status               string
		next, finished       *int64
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

const (
	claimReturning = ` RETURNING d.id, d.event_id, d.subscription_id, d.status, d.attempts, d.step, d.next_attempt_at,
		d.last_status_code, d.last_error, d.created_at, d.updated_at, d.lease_token, d.seq`
	// claimSet leases a delivery. A new round serves a retry asked for while an earlier one was
	// in flight, unless it takes over a lease that ran out (lease_until not 0), whose round may
	// still be running and must not lose the request.
	claimSet = `lease_until = $1, lease_token = d.lease_token + 1,
		retry_requested = CASE WHEN d.lease_until = 0 THEN false ELSE d.retry_requested END`
	// claimSQL leases up to $4 of one subscription's due deliveries, the longest due first
	// (River's JobGetAvailable: lock, skipping rows others hold, then update).
	claimSQL = `WITH locked AS (
		SELECT id FROM deliveries WHERE subscription_id = $2 AND status = 'pending' AND NOT paused
		AND next_attempt_at <= $3 AND lease_until <= $3 ORDER BY next_attempt_at, seq LIMIT $4
		FOR UPDATE SKIP LOCKED)
		UPDATE deliveries d SET ` + claimSet + ` FROM locked WHERE d.id = locked.id` + claimReturning
	// nextDueSQL is when a subscription's earliest unleased pending delivery is due.
	nextDueSQL = `SELECT next_attempt_at FROM deliveries WHERE subscription_id = $1 AND status = 'pending'
		AND NOT paused AND lease_until <= $2 ORDER BY next_attempt_at LIMIT 1`
	// fifoHeadSQL is a subscription's oldest pending delivery, in ingest order.
	fifoHeadSQL = `SELECT id, next_attempt_at, lease_until FROM deliveries WHERE subscription_id = $1
		AND status = 'pending' AND NOT paused ORDER BY created_at, seq LIMIT 1 FOR UPDATE`
	claimOneSQL = `UPDATE deliveries d SET ` + claimSet + ` WHERE d.id = $2` + claimReturning
	// lockClaimedSQL locks the claimed subscriptions' rows, in id order.
	lockClaimedSQL = `SELECT id, active, max_in_flight, rate_limit, rate_next_at FROM subscriptions
		WHERE id = ANY($1) ORDER BY id FOR UPDATE`
	// rateGrantedSQL moves a rate-limited subscription's next claim past the deliveries
	// just claimed.
	rateGrantedSQL = "UPDATE subscriptions SET rate_next_at = $2 WHERE id = $1"
	// leasedSQL counts the subscriptions' deliveries in flight (leased at $2). It runs once
	// their rows are locked: a statement's snapshot is taken when it starts, so counting in
	// lockClaimedSQL would miss the claims it waited for.
	leasedSQL = `SELECT subscription_id, COUNT(*) FROM deliveries WHERE subscription_id = ANY($1) AND status = 'pending'
		AND lease_until > $2 GROUP BY subscription_id`
	claimedEventsSQL = "SELECT id, type, payload, traceparent, received_at FROM events WHERE id = ANY($1)"
)

// claimed is a claimed subscription as its row, locked, says.
type claimed struct {
	active      bool
	maxInFlight int
	leased      int // its deliveries in flight
	// rateLimit is its rate_limit (0: none); rateNext is when its next delivery may be
	// claimed under it, in Unix nanoseconds.
	rateLimit float64
	rateNext  int64
}

// rateWindow is how far ahead one claim of a rate-limited subscription may take deliveries:
// a second's worth of its rate, and at least one.
const rateWindow = time.Second

// rateGrant returns how many deliveries a claim at now may take under c's rate limit (all of
// limit when it has none), and the interval each one taken moves rate_next_at by.
func (c claimed) rateGrant(limit int, now int64) (grant int, interval int64) {
	if c.rateLimit <= 0 {
		return limit, 0
	}
	if c.rateNext > now {
		return 0, 0
	}
	interval = max(1, int64(float64(time.Second)/c.rateLimit))
	return min(limit, max(1, int(int64(rateWindow)/interval))), interval
}

// ClaimDeliveries leases due deliveries, subscription by subscription, in one transaction.
//
// The transaction first locks the rows of the subscriptions it claims for, in id order: claims
// of the same subscription by several replicas run one after the other, so that its limits
// hold across them, and two claims of overlapping subscriptions cannot deadlock. A
// subscription's claim takes at most its Limit and, when its policy sets max_in_flight, no
// more than leaves that many of its deliveries leased at opts.Now; a subscription whose limit
// that caps gets no NextDue (a completion, not a due time, makes room). A fifo claim takes the
// oldest pending delivery only when none of the subscription's is leased. An inactive
// subscription gets nothing, and any of its pending deliveries not yet paused (an ingest that
// raced its deactivation) are paused.
//
// A subscription with a rate_limit is granted, in all replicas' claims together, no more than
// its rate: a claim takes nothing before the subscription's rate_next_at, and at most a
// second's worth of its rate (at least one) from then, and moves rate_next_at past what it
// took, one interval (1s / rate_limit) a delivery, from opts.Now. Its NextDue is then no
// earlier than rate_next_at. (Each engine's token bucket still paces the attempts themselves,
// quick retries included.)
func (s *Store) ClaimDeliveries(ctx context.Context, opts store.ClaimOptions) (store.ClaimResult, error) {
	var res store.ClaimResult
	var ids []string
	for _, sc := range opts.Subscriptions {
		if sc.Limit > 0 {
			ids = append(ids, sc.ID)
		}
	}
	if len(ids) == 0 {
		return res, nil
	}
	s.releaseUncertain(ctx)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		res = store.ClaimResult{NextDue: make(map[string]time.Time)}
		now, until := opts.Now.UnixNano(), opts.LeaseUntil.UnixNano()
		subs, err := lockClaimed(ctx, tx, ids, now)
		if err != nil {
			return err
		}
		perSub := make([][]*store.Claim, len(opts.Subscriptions)) // the claims, by request
		var plain []plainClaim
		for i, sc := range opts.Subscriptions {
			if sc.Limit <= 0 {
				continue
			}
			sub, exists := subs[sc.ID]
			limit := sc.Limit
			switch {
			case !exists: // deleted: what is left of its deliveries goes as SQLite's would
			case !sub.active:
				if _, err := tx.Exec(ctx, `UPDATE deliveries SET paused = true WHERE subscription_id = $1
					AND status = 'pending' AND NOT paused`, sc.ID); err != nil {
					return fmt.Errorf("subscription %q: %w", sc.ID, err)
				}
				continue
			case sub.maxInFlight > 0:
				limit = min(limit, sub.maxInFlight-sub.leased)
			}
			var claims []*store.Claim
			grant, interval := sub.rateGrant(limit, now)
			switch {
			case limit <= 0:
				continue
			case sc.FIFO && sub.leased > 0:
				continue
			case grant <= 0: // its rate allows nothing before rate_next_at
			case sc.FIFO:
				claims, err = claimHead(ctx, tx, sc.ID, now, until, res.NextDue)
			case sub.rateLimit <= 0:
				plain = append(plain, plainClaim{at: i, sub: sc.ID, limit: grant})
				continue
			default:
				claims, err = claimDue(ctx, tx, sc.ID, grant, now, until, res.NextDue)
			}
			if err != nil {
				return fmt.Errorf("subscription %q: %w", sc.ID, err)
			}
			perSub[i] = claims
			if sub.rateLimit > 0 {
				if err := rateGranted(ctx, tx, sc.ID, sub.rateNext, now, interval, len(claims), res.NextDue); err != nil {
					return fmt.Errorf("subscription %q: %w", sc.ID, err)
				}
			}
		}
		b, err := claimPlain(ctx, tx, plain, perSub, now, until, res.NextDue)
		if err != nil {
			return err
		}
		for _, claims := range perSub {
			res.Claims = append(res.Claims, claims...)
		}
		queueClaimedEvents(b, res.Claims)
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		s.noteUncertain(res.Claims)
		return store.ClaimResult{}, err
	}
	return res, nil
}

// rateGranted, after the claim of a rate-limited subscription that took n deliveries (each
// interval apart), moves its rate_next_at past them, and makes its NextDue, when it has
// unleased pending deliveries left, no earlier than rate_next_at: whether the claim took
// nothing (its rate allowed none yet) or all its rate allowed, the engine comes back then.
func rateGranted(ctx context.Context, tx pgx.Tx, sub string, next, now, interval int64, n int, nextDue map[string]time.Time) error {
	if n > 0 {
		next = now + int64(n)*interval
		if _, err := tx.Exec(ctx, rateGrantedSQL, sub, next); err != nil {
			return err
		}
	}
	var at int64
	switch err := tx.QueryRow(ctx, nextDueSQL, sub, now).Scan(&at); {
	case errors.Is(err, pgx.ErrNoRows):
		delete(nextDue, sub)
	case err != nil:
		return err
	default:
		nextDue[sub] = time.Unix(0, max(at, next)).UTC()
	}
	return nil
}

// noteUncertain keeps the leases of claims whose transaction failed, for releaseUncertain: it
// may have committed all the same (the connection was lost during its COMMIT), and then they
// would stay leased, with no round to run them, until their leases ran out.
func (s *Store) noteUncertain(claims []*store.Claim) {
	if len(claims) == 0 {
		return
	}
	s.uncertainMu.Lock()
	defer s.uncertainMu.Unlock()
	for _, c := range claims {
		s.uncertain = append(s.uncertain, store.Lease{DeliveryID: c.Delivery.ID, Token: c.Token})
	}
}

// releaseUncertain releases the leases noteUncertain kept, before the next claim: those that
// were committed are claimable again at once; the others (and any claimed again since) have
// another token, which a release leaves alone. Leases it cannot release yet are kept for the
// next claim.
func (s *Store) releaseUncertain(ctx context.Context) {
	s.uncertainMu.Lock()
	leases := s.uncertain
	s.uncertain = nil
	s.uncertainMu.Unlock()
	if len(leases) == 0 {
		return
	}
	if err := s.ReleaseDeliveries(ctx, leases); err != nil {
		s.uncertainMu.Lock()
		s.uncertain = append(s.uncertain, leases...)
		s.uncertainMu.Unlock()
	}
}

// lockClaimed locks the rows of the subscriptions with ids that exist, in id order, and
// returns what a claim needs of them. Its two statements go in one pipelined batch: the count
// of leases starts once the rows are locked.
func lockClaimed(ctx context.Context, tx pgx.Tx, ids []string, now int64) (map[string]claimed, error) {
	subs := make(map[string]claimed, len(ids))
	b := &pgx.Batch{}
	b.Queue(lockClaimedSQL, ids).Query(func(rows pgx.Rows) error {
		var id string
		var c claimed
		_, err := pgx.ForEachRow(rows, []any{&id, &c.active, &c.maxInFlight, &c.rateLimit, &c.rateNext}, func() error {
			subs[id] = c
			return nil
		})
		return err
	})
	b.Queue(leasedSQL, ids, now).Query(func(rows pgx.Rows) error {
		var id string
		var n int
		_, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error {
			if c, ok := subs[id]; ok {
				c.leased = n
				subs[id] = c
			}
			return nil
		})
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return subs, nil
}

// plainClaim is the claim of a subscription with no rate limit and no fifo, at its place in
// the claim's requests.
type plainClaim struct {
	at    int
	sub   string
	limit int
}

// claimPlain leases the due deliveries of plain claims, into perSub at their places, all in
// one pipelined batch. It returns a batch with, queued, the look-ups of when the subscriptions
// that got fewer than their limit have their next unleased delivery due (into nextDue), for its
// caller to send with its own statements.
func claimPlain(ctx context.Context, tx pgx.Tx, reqs []plainClaim, perSub [][]*store.Claim, now, until int64, nextDue map[string]time.Time) (*pgx.Batch, error) {
	next := &pgx.Batch{}
	if len(reqs) == 0 {
		return next, nil
	}
	b := &pgx.Batch{}
	for _, r := range reqs {
		b.Queue(claimSQL, until, r.sub, now, r.limit).Query(func(rows pgx.Rows) error {
			claims, err := scanClaims(rows)
			if err != nil {
				return fmt.Errorf("subscription %q: %w", r.sub, err)
			}
			perSub[r.at] = claims
			return nil
		})
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	for _, r := range reqs {
		if len(perSub[r.at]) == r.limit {
			continue
		}
		// The rest is not due yet, or leased.
		next.Queue(nextDueSQL, r.sub, now).Query(func(rows pgx.Rows) error {
			var at int64
			_, err := pgx.ForEachRow(rows, []any{&at}, func() error {
				nextDue[r.sub] = time.Unix(0, at).UTC()
				return nil
			})
			if err != nil {
				return fmt.Errorf("subscription %q: %w", r.sub, err)
			}
			return nil
		})
	}
	return next, nil
}

// queueClaimedEvents queues on b the read of the claimed deliveries' events into the claims.
func queueClaimedEvents(b *pgx.Batch, claims []*store.Claim) {
	if len(claims) == 0 {
		return
	}
	ids := make([]string, len(claims))
	for i, c := range claims {
		ids[i] = c.Delivery.EventID
	}
	b.Queue(claimedEventsSQL, ids).Query(func(rows pgx.Rows) error {
		events := make(map[string]*store.Event, len(ids))
		var (
			ev   store.Event
			recv int64
		)
		if _, err := pgx.ForEachRow(rows, []any{&ev.ID, &ev.Type, &ev.Payload, &ev.TraceParent, &recv}, func() error {
			e := ev
			e.ReceivedAt = time.Unix(0, recv).UTC()
			events[e.ID] = &e
			return nil
		}); err != nil {
			return err
		}
		for _, c := range claims {
			ev, ok := events[c.Delivery.EventID]
			if !ok {
				return fmt.Errorf("event %q: %w", c.Delivery.EventID, store.ErrNotFound)
			}
			c.Event, c.Delivery.EventType = ev, ev.Type
		}
		return nil
	})
}

// claimDue leases up to limit due deliveries of one subscription; when it finds fewer, it notes
// in nextDue when the subscription's next unleased one is due.
func claimDue(ctx context.Context, tx pgx.Tx, sub string, limit int, now, until int64, nextDue map[string]time.Time) ([]*store.Claim, error) {
	rows, err := tx.Query(ctx, claimSQL, until, sub, now, limit)
	if err != nil {
		return nil, err
	}
	claims, err := scanClaims(rows)
	if err != nil {
		return nil, err
	}
	if len(claims) == limit {
		return claims, nil
	}
	// The rest is not due yet, or leased.
	var at int64
	switch err := tx.QueryRow(ctx, nextDueSQL, sub, now).Scan(&at); {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, err
	default:
		nextDue[sub] = time.Unix(0, at).UTC()
	}
	return claims, nil
}

// claimHead leases a fifo subscription's oldest pending delivery if it is due and not leased.
func claimHead(ctx context.Context, tx pgx.Tx, sub string, now, until int64, nextDue map[string]time.Time) ([]*store.Claim, error) {
	var (
		id           string
		due, leaseTo int64
	)
	switch err := tx.QueryRow(ctx, fifoHeadSQL, sub).Scan(&id, &due, &leaseTo); {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, err
	case leaseTo > now: // in flight
		return nil, nil
	case due > now:
		nextDue[sub] = time.Unix(0, due).UTC()
		return nil, nil
	}
	rows, err := tx.Query(ctx, claimOneSQL, until, id)
	if err != nil {
		return nil, err
	}
	return scanClaims(rows)
}

// scanClaims reads the rows a claim statement returned, longest due first (RETURNING follows
// the update's order, not the lock's), and closes them.
func scanClaims(rows pgx.Rows) ([]*store.Claim, error) {
	defer rows.Close()
	type row struct {
		claim *store.Claim
		due   int64
		seq   int64
	}
	var got []row
	for rows.Next() {
		var (
			d                    store.Delivery
			r                    = row{claim: &store.Claim{Delivery: &d}}
			status               string
			next                 *int64
			createdAt, updatedAt int64
		)
		if err := rows.Scan(&d.ID, &d.EventID, &d.SubscriptionID, &status, &d.Attempts, &d.Step, &next,
			&d.LastStatusCode, &d.LastError, &createdAt, &updatedAt, &r.claim.Token, &r.seq); err != nil {
			return nil, err
		}
		d.Status, d.NextAttemptAt = store.DeliveryStatus(status), fromNanos(next)
		d.CreatedAt, d.UpdatedAt = time.Unix(0, createdAt).UTC(), time.Unix(0, updatedAt).UTC()
		if next != nil {
			r.due = *next
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(got, func(a, b row) int { return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.seq, b.seq)) })
	claims := make([]*store.Claim, len(got))
	for i, r := range got {
		claims[i] = r.claim
	}
	return claims, nil
}

const (
	// lockOutcomeSubscriptionsSQL reads what store.ApplyOutcome needs of the outcomes'
	// subscriptions that exist, locking their rows in id order.
	lockOutcomeSubscriptionsSQL = `SELECT id, active, deactivated_at, in_error_state, error_state_reason,
		detected_error_state_at, consecutive_failures FROM subscriptions WHERE id = ANY($1) ORDER BY id FOR UPDATE`
	// outcomeSubscriptionSQL writes back what store.ApplyOutcome changed.
	outcomeSubscriptionSQL = `UPDATE subscriptions SET active = $2, deactivated_at = $3, in_error_state = $4,
		error_state_reason = $5, detected_error_state_at = $6, consecutive_failures = $7 WHERE id = $1`
	lockDeliveriesSQL = "SELECT 1 FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE"
	// insertAttemptsSQL records the attempts of every outcome, in order, in one statement.
	insertAttemptsSQL = `INSERT INTO attempts (delivery_id, attempted_at, duration, status_code, error, response_body, trace_id)
		SELECT a.* FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[], $5::text[], $6::bytea[], $7::text[])
		AS a (delivery_id, attempted_at, duration, status_code, error, response_body, trace_id)`
	// completeDeliveriesSQL applies each outcome while its claim's token holds, and returns the
	// ids of the deliveries it applied. A retry asked for during the round (retry_requested)
	// makes the delivery due again at once instead, unless its subscription is gone (o.subscribed
	// false).
	completeDeliveriesSQL = `UPDATE deliveries d SET
		status = CASE WHEN d.retry_requested AND o.subscribed THEN 'pending' ELSE o.status END,
		attempts = d.attempts + o.attempts, step = d.step + o.step,
		next_attempt_at = CASE WHEN d.retry_requested AND o.subscribed THEN $11::bigint ELSE o.next_attempt_at END,
		lease_until = 0, last_status_code = o.status_code, last_error = o.error, updated_at = $11::bigint,
		finished_at = CASE WHEN d.retry_requested AND o.subscribed THEN NULL ELSE o.finished_at END,
		retry_requested = false
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::integer[], $5::integer[], $6::bigint[], $7::integer[],
			$8::text[], $9::bigint[], $10::boolean[])
		AS o (id, token, status, attempts, step, next_attempt_at, status_code, error, finished_at, subscribed)
		WHERE d.id = o.id AND d.lease_token = o.token AND d.status = 'pending'
		RETURNING d.id`
	// staleAttemptsSQL counts the attempts of stale outcomes (whose token no longer holds), which
	// are recorded as they happened although the outcomes are not applied. It runs before
	// completeDeliveriesSQL, which would make an applied row look stale to it.
	staleAttemptsSQL = `UPDATE deliveries d SET attempts = d.attempts + o.attempts
		FROM unnest($1::text[], $2::bigint[], $3::integer[]) AS o (id, token, attempts)
		WHERE d.id = o.id AND NOT (d.lease_token = o.token AND d.status = 'pending')`
)

// completion is CompleteDeliveries' statements' arguments for a batch of outcomes, one
// element an outcome (an attempt, for the attempts').
type completion struct {
	// The deliveries' update.
	ids, statuses, lastErrors []string
	tokens                    []int64
	next                      []*int64
	finishedAt                []*int64
	attempts, steps           []int32
	codes                     []int32
	subscribed                []bool
	// The stale outcomes' attempt counts, for outcomes with attempts.
	countIDs    []string
	countTokens []int64
	counts      []int32
	// The attempts.
	attemptIDs           []string
	attemptAt, durations []int64
	attemptCodes         []int32
	attemptErrs, traces  []string
	bodies               [][]byte
}

// add appends an outcome's arguments.
func (c *completion) add(o *store.Outcome, status store.DeliveryStatus, step int, next, finished *int64, lastError string, subscribed bool) {
	var last store.Attempt
	if len(o.Attempts) > 0 {
		last = o.Attempts[len(o.Attempts)-1]
		c.countIDs, c.countTokens, c.counts = append(c.countIDs, o.DeliveryID), append(c.countTokens, o.Token), append(c.counts, int32(len(o.Attempts)))
	}
	c.ids, c.tokens, c.statuses = append(c.ids, o.DeliveryID), append(c.tokens, o.Token), append(c.statuses, string(status))
	c.attempts, c.steps, c.next = append(c.attempts, int32(len(o.Attempts))), append(c.steps, int32(step)), append(c.next, next)
	c.codes, c.lastErrors = append(c.codes, int32(last.StatusCode)), append(c.lastErrors, lastError)
	c.finishedAt, c.subscribed = append(c.finishedAt, finished), append(c.subscribed, subscribed)
	for _, a := range o.Attempts {
		c.attemptIDs, c.attemptAt, c.durations = append(c.attemptIDs, o.DeliveryID), append(c.attemptAt, a.At.UnixNano()), append(c.durations, int64(a.Duration))
		c.attemptCodes, c.attemptErrs = append(c.attemptCodes, int32(a.StatusCode)), append(c.attemptErrs, a.Error)
		c.bodies, c.traces = append(c.bodies, a.ResponseBody), append(c.traces, a.TraceID)
	}
}

// CompleteDeliveries records outcomes, each while its claim's token holds, in one transaction
// of a few round trips, whatever the number of outcomes: every statement is set-based, and
// the statements that do not depend on an earlier one's answer go in one pipelined batch.
//
// The transaction locks the outcomes' subscription rows in id order, then their delivery rows
// in id order, before it changes any: two replicas completing overlapping batches queue rather
// than deadlock, and a subscription's state (ApplyOutcome's read-modify-write) is never changed
// by two at once. A subscription whose state no outcome changes (a success when it counts no
// failures and is not in the error state) is not written.
func (s *Store) CompleteDeliveries(ctx context.Context, outcomes []*store.Outcome, policy store.ErrorPolicy, now time.Time) ([]string, error) {
	var stale []string
	changed := false
	var subIDs, deliveryIDs []string
	for _, o := range outcomes {
		subIDs = append(subIDs, o.SubscriptionID)
		deliveryIDs = append(deliveryIDs, o.DeliveryID)
	}
	slices.Sort(subIDs)
	slices.Sort(deliveryIDs)
	subIDs, deliveryIDs = slices.Compact(subIDs), slices.Compact(deliveryIDs)
	at := now.UnixNano()
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		stale, changed = nil, false
		var subs map[string]*store.Subscription // missing: deleted meanwhile
		b := &pgx.Batch{}
		b.Queue(lockOutcomeSubscriptionsSQL, subIDs).Query(func(rows pgx.Rows) error {
			var err error
			subs, err = scanOutcomeSubscriptions(rows)
			return err
		})
		b.Queue(lockDeliveriesSQL, deliveryIDs)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}

		var c completion
		for _, o := range outcomes {
			var last store.Attempt
			if len(o.Attempts) > 0 {
				last = o.Attempts[len(o.Attempts)-1]
			}
			status, step, next, finished := store.Failed, 0, (*int64)(nil), &at
			lastError := last.Error
			subscribed := subs[o.SubscriptionID] != nil && !o.SubscriptionDeleted // a retry asked for may run
			switch {
			case o.Succeeded:
				status = store.Succeeded
			case !subscribed:
				lastError = cmp.Or(lastError, "subscription deleted")
			case o.Interrupted && o.NextAttemptAt != nil:
				status, next, finished = store.Pending, nanos(o.NextAttemptAt), nil
			case o.NextAttemptAt != nil:
				status, step, next, finished = store.Pending, 1, nanos(o.NextAttemptAt), nil
			}
			c.add(o, status, step, next, finished, lastError, subscribed)
		}
		applied := make(map[string]bool, len(outcomes))
		b = &pgx.Batch{}
		if len(c.attemptIDs) > 0 {
			b.Queue(insertAttemptsSQL, c.attemptIDs, c.attemptAt, c.durations, c.attemptCodes, c.attemptErrs, c.bodies, c.traces)
			b.Queue(staleAttemptsSQL, c.countIDs, c.countTokens, c.counts)
		}
		b.Queue(completeDeliveriesSQL, c.ids, c.tokens, c.statuses, c.attempts, c.steps, c.next, c.codes, c.lastErrors,
			c.finishedAt, c.subscribed, at).Query(func(rows pgx.Rows) error {
			var id string
			_, err := pgx.ForEachRow(rows, []any{&id}, func() error {
				applied[id] = true
				return nil
			})
			return err
		})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}

		dirty := make(map[string]store.Subscription) // changed subscriptions, as they were
		for _, o := range outcomes {
			if !applied[o.DeliveryID] {
				stale = append(stale, o.DeliveryID)
				continue
			}
			sub := subs[o.SubscriptionID]
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
		b = &pgx.Batch{}
		for _, id := range subIDs {
			before, ok := dirty[id]
			if !ok {
				continue
			}
			sub := subs[id]
			b.Queue(outcomeSubscriptionSQL, id, sub.Active, nanos(sub.DeactivatedAt), sub.InErrorState, sub.ErrorStateReason,
				nanos(sub.DetectedErrorStateAt), sub.ConsecutiveFailures)
			if sub.Active != before.Active {
				b.Queue(setPausedSQL, !sub.Active, id)
			}
			if sub.Active != before.Active || sub.InErrorState != before.InErrorState {
				changed = true
			}
		}
		if changed {
			b.Queue(subscriptionsChangedSQL, s.subscriptionsChannel)
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, err
	}
	if changed {
		s.generation.Add(1)
	}
	return stale, nil
}

// scanOutcomeSubscriptions reads the rows of lockOutcomeSubscriptionsSQL, by id.
func scanOutcomeSubscriptions(rows pgx.Rows) (map[string]*store.Subscription, error) {
	subs := make(map[string]*store.Subscription)
	var (
		sub                       store.Subscription
		deactivatedAt, detectedAt *int64
	)
	_, err := pgx.ForEachRow(rows, []any{&sub.ID, &sub.Active, &deactivatedAt, &sub.InErrorState, &sub.ErrorStateReason,
		&detectedAt, &sub.ConsecutiveFailures}, func() error {
		sub.DeactivatedAt, sub.DetectedErrorStateAt = fromNanos(deactivatedAt), fromNanos(detectedAt)
		row := sub
		subs[row.ID] = &row
		return nil
	})
	return subs, err
}

// setPaused takes a subscription's pending deliveries off the due path (an inactive one's) or
// puts them back.
func setPaused(ctx context.Context, tx pgx.Tx, subID string, paused bool) error {
	_, err := tx.Exec(ctx, setPausedSQL, paused, subID)
	return err
}

const setPausedSQL = "UPDATE deliveries SET paused = $1 WHERE subscription_id = $2 AND status = 'pending'"

const (
	releaseSQL = "UPDATE deliveries SET lease_until = 0 WHERE id = $1 AND lease_token = $2"
	// extendSQL moves a lease still held: not ended by a completion or a release (both of which
	// set lease_until to 0), nor taken over.
	extendSQL = `UPDATE deliveries SET lease_until = $1 WHERE id = $2 AND lease_token = $3 AND status = 'pending'
		AND lease_until != 0`
)

// byDelivery returns leases sorted by delivery id: the order their rows are locked in.
func byDelivery(leases []store.Lease) []store.Lease {
	return slices.SortedFunc(slices.Values(leases), func(a, b store.Lease) int { return cmp.Compare(a.DeliveryID, b.DeliveryID) })
}

// ReleaseDeliveries ends leases whose tokens still hold, in one transaction that updates their
// rows in id order. It notifies the other replicas when it released any.
func (s *Store) ReleaseDeliveries(ctx context.Context, leases []store.Lease) error {
	if len(leases) == 0 {
		return nil
	}
	sorted := byDelivery(leases)
	return s.inTx(ctx, func(tx pgx.Tx) error {
		released := int64(0)
		for _, l := range sorted {
			tag, err := tx.Exec(ctx, releaseSQL, l.DeliveryID, l.Token)
			if err != nil {
				return err
			}
			released += tag.RowsAffected()
		}
		if released > 0 {
			return s.notifyDue(ctx, tx)
		}
		return nil
	})
}

// ExtendLeases moves leases whose tokens still hold to until, in one transaction that updates
// their rows in id order.
func (s *Store) ExtendLeases(ctx context.Context, leases []store.Lease, until time.Time) ([]string, error) {
	if len(leases) == 0 {
		return nil, nil
	}
	sorted := byDelivery(leases)
	var lost []string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		lost = nil
		for _, l := range sorted {
			tag, err := tx.Exec(ctx, extendSQL, until.UnixNano(), l.DeliveryID, l.Token)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				lost = append(lost, l.DeliveryID)
			}
		}
		return nil
	})
	return lost, err
}

// RecoverLeases does nothing: the leases found at start may be other replicas', still running,
// and this Store cannot tell a live replica's from a lost one's. They are left to expire, when
// any replica's claim takes their deliveries over (a lost replica's rounds are retried then,
// at worst a lease's length late).
func (s *Store) RecoverLeases(context.Context) error { return nil }

// DueSubscriptions returns when each subscription's earliest unleased pending delivery is due.
func (s *Store) DueSubscriptions(ctx context.Context, now time.Time) (map[string]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT subscription_id, MIN(next_attempt_at) FROM deliveries
		WHERE status = 'pending' AND NOT paused AND lease_until <= $1 GROUP BY subscription_id`, now.UnixNano())
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
	err := s.pool.QueryRow(ctx, "SELECT id, type, payload, traceparent, deliveries, received_at FROM events WHERE id = $1", id).
		Scan(&ev.ID, &ev.Type, &ev.Payload, &ev.TraceParent, &ev.Deliveries, &recv)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("event %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, nil, err
	}
	ev.ReceivedAt = time.Unix(0, recv).UTC()
	rows, err := s.pool.Query(ctx, "SELECT "+deliveryColumns+
		" FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.event_id = $1 ORDER BY d.created_at, d.id", id)
	if err != nil {
		return nil, nil, err
	}
	ds, err := collectDeliveries(rows)
	return &ev, ds, err
}

func collectDeliveries(rows pgx.Rows) ([]*store.Delivery, error) {
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

type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func getDelivery(ctx context.Context, q queryer, id string) (*store.Delivery, error) {
	d, err := scanDelivery(q.QueryRow(ctx, "SELECT "+deliveryColumns+
		" FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("delivery %q: %w", id, store.ErrNotFound)
	}
	return d, err
}

// GetDelivery returns a delivery and its attempts.
func (s *Store) GetDelivery(ctx context.Context, id string) (*store.Delivery, []store.Attempt, error) {
	d, err := getDelivery(ctx, s.pool, id)
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT attempted_at, duration, status_code, error, response_body, trace_id
		FROM attempts WHERE delivery_id = $1 ORDER BY id`, id)
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

// RetryDelivery makes a delivery pending and due at now, or marks a leased one. It locks the
// subscription's row (shared) before the delivery's, as claims and completions do, and
// notifies the other replicas when it made the delivery due.
func (s *Store) RetryDelivery(ctx context.Context, id string, now time.Time) (*store.Delivery, error) {
	var d *store.Delivery
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		at := now.UnixNano()
		var subID string
		err := tx.QueryRow(ctx, "SELECT subscription_id FROM deliveries WHERE id = $1", id).Scan(&subID)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("delivery %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var active bool
		err = tx.QueryRow(ctx, "SELECT active FROM subscriptions WHERE id = $1 FOR SHARE", subID).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("delivery %q: %w", id, store.ErrSubscriptionGone)
		}
		if err != nil {
			return err
		}
		var (
			status     string
			leaseUntil int64
		)
		err = tx.QueryRow(ctx, "SELECT status, lease_until FROM deliveries WHERE id = $1 FOR UPDATE", id).Scan(&status, &leaseUntil)
		if errors.Is(err, pgx.ErrNoRows) { // pruned meanwhile
			return fmt.Errorf("delivery %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if status == string(store.Pending) && leaseUntil > at {
			// A round is in flight: its completion makes the delivery due again.
			_, err = tx.Exec(ctx, "UPDATE deliveries SET retry_requested = true, updated_at = $1 WHERE id = $2", at, id)
		} else {
			_, err = tx.Exec(ctx, `UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = 0,
				finished_at = NULL, updated_at = $1, paused = $2, retry_requested = false,
				lease_token = lease_token + 1 WHERE id = $3`, at, !active, id)
			if err == nil && active {
				err = s.notifyDue(ctx, tx)
			}
		}
		if err != nil {
			return err
		}
		d, err = getDelivery(ctx, tx, id)
		return err
	})
	return d, err
}

// Prune deletes a bounded batch of finished deliveries and old events. It takes this schema's
// prune lock first, without waiting: while another replica prunes, it deletes nothing and
// returns 0, false (that replica's call reports whether there is more).
func (s *Store) Prune(ctx context.Context, cutoff time.Time, max int) (int, bool, error) {
	var deliveries, events int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		deliveries, events = 0, 0
		var locked bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock("+advisoryKeys+")", "webhookgw prune").Scan(&locked); err != nil {
			return err
		}
		if !locked {
			deliveries, events = -1, -1
			return nil
		}
		at := cutoff.UnixNano()
		tag, err := tx.Exec(ctx, `DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries
			WHERE status != 'pending' AND finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
			AND status != 'pending' AND finished_at < $1`, at, max)
		if err != nil {
			return err
		}
		deliveries = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events e WHERE received_at < $1
			AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT $2 FOR UPDATE SKIP LOCKED)`, at, max)
		if err != nil {
			return err
		}
		events = tag.RowsAffected()
		return nil
	})
	if err != nil || deliveries < 0 {
		return 0, false, err
	}
	return int(deliveries), deliveries >= int64(max) || events >= int64(max), nil
}

// failPending fails a deleted subscription's pending deliveries that are not leased at now;
// a leased one's round records what happened when it completes.
func failPending(ctx context.Context, tx pgx.Tx, subID, reason string, now time.Time) error {
	at := now.UnixNano()
	_, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = 0,
		last_error = $1, updated_at = $2, finished_at = $2 WHERE subscription_id = $3 AND status = 'pending' AND lease_until <= $2`,
		reason, at, subID)
	return err
}

// Stats returns counts for monitoring.
func (s *Store) Stats(ctx context.Context, now time.Time) (store.Stats, error) {
	var st store.Stats
	var oldest *int64
	err := s.pool.QueryRow(ctx, `SELECT COUNT(*),
		MIN(next_attempt_at) FILTER (WHERE next_attempt_at <= $1 AND lease_until <= $1)
		FROM deliveries WHERE status = 'pending' AND NOT paused`, now.UnixNano()).Scan(&st.Pending, &oldest)
	if err != nil {
		return st, err
	}
	if oldest != nil {
		st.OldestDue = time.Unix(0, *oldest).UTC()
	}
	err = s.pool.QueryRow(ctx, `SELECT
		COUNT(*) FILTER (WHERE active AND NOT in_error_state),
		COUNT(*) FILTER (WHERE active AND in_error_state),
		COUNT(*) FILTER (WHERE NOT active) FROM subscriptions`).Scan(&st.Active, &st.InErrorState, &st.Inactive)
	return st, err
}
