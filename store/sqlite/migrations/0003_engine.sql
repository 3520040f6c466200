-- The delivery engine's claim protocol (fenced, per subscription) and per-subscription policy.

-- lease_token grows with every claim: completing or releasing a delivery applies only while the
-- token the claimer holds is still the row's. retry_requested marks a retry asked for while a
-- round was in flight: the round's completion schedules it. paused marks the pending deliveries
-- of an inactive subscription: they leave the due path until it is reactivated.
ALTER TABLE deliveries ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN retry_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;

UPDATE deliveries SET paused = 1 WHERE status = 'pending'
    AND subscription_id IN (SELECT id FROM subscriptions WHERE active = 0);

DROP INDEX deliveries_due;
-- One subscription's due work, in due order: the claim and the next-due look-up.
CREATE INDEX deliveries_queue ON deliveries (subscription_id, next_attempt_at) WHERE status = 'pending' AND paused = 0;
-- One subscription's pending work in ingest order: the head of a fifo subscription.
CREATE INDEX deliveries_fifo ON deliveries (subscription_id, created_at) WHERE status = 'pending' AND paused = 0;

-- version grows when what a delivery is sent with changes (URL, events, headers, plugins,
-- credentials, policy).
ALTER TABLE subscriptions ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE subscriptions ADD COLUMN max_in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN rate_limit REAL NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN ordering TEXT NOT NULL DEFAULT '';
