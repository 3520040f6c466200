-- Events, their deliveries (one per matching subscription) and every HTTP attempt.
-- Times are Unix nanoseconds.
CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    payload      BLOB NOT NULL,            -- the exact bytes delivered
    traceparent  TEXT NOT NULL DEFAULT '', -- the producer's W3C trace context
    deliveries   INTEGER NOT NULL,         -- fan-out at ingest, repeated to duplicates
    received_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,     -- the webhook-id header
    event_id         TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    subscription_id  TEXT NOT NULL,        -- kept when the subscription is deleted
    status           TEXT NOT NULL,        -- pending | succeeded | failed
    attempts         INTEGER NOT NULL DEFAULT 0, -- HTTP attempts, quick retries included
    step             INTEGER NOT NULL DEFAULT 0, -- durable retries used of delivery.schedule
    next_attempt_at  INTEGER,              -- NULL once finished
    lease_until      INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
) STRICT;

-- Covers the claim: due, not leased, of which subscription, with no look-up of the row.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, lease_until, subscription_id) WHERE status = 'pending';
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, created_at);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE status != 'pending';

CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY,
    delivery_id   TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempted_at  INTEGER NOT NULL,
    duration      INTEGER NOT NULL,        -- nanoseconds
    status_code   INTEGER NOT NULL DEFAULT 0,
    error         TEXT NOT NULL DEFAULT '',
    response_body BLOB,                    -- the first 1 KiB
    trace_id      TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX attempts_delivery ON attempts (delivery_id, id);

-- Consecutive failed attempts, for the error state.
ALTER TABLE subscriptions ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
