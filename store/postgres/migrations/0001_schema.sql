-- The gateway's schema on PostgreSQL: the tables of store/sqlite's migrations, with the same
-- columns and meaning. Times are Unix nanoseconds (bigint), as SQLite keeps them, so that
-- both backends return exactly the times they were given.

-- Subscriptions: webhooks (dialect 1), registrations (dialect 2) and the ones gateway.yaml
-- declares, in one table.
CREATE TABLE subscriptions (
    id                      text COLLATE "C" PRIMARY KEY, -- ids compare bytewise, as in SQLite
    kind                    text NOT NULL,
    source                  text NOT NULL,
    url                     text NOT NULL,
    events                  text NOT NULL,              -- JSON array; ["*"] is every type
    headers                 text,                       -- JSON object, NULL when none
    plugins                 text NOT NULL DEFAULT '[]', -- JSON array of {name, config}
    request_id              text NOT NULL DEFAULT '',
    source_sender_id        text NOT NULL DEFAULT '',
    username                text NOT NULL DEFAULT '',
    password                text NOT NULL DEFAULT '',
    active                  boolean NOT NULL DEFAULT true,
    deactivated_at          bigint,
    in_error_state          boolean NOT NULL DEFAULT false,
    error_state_reason      text NOT NULL DEFAULT '',
    detected_error_state_at bigint,
    consecutive_failures    integer NOT NULL DEFAULT 0,
    max_in_flight           integer NOT NULL DEFAULT 0,
    rate_limit              double precision NOT NULL DEFAULT 0,
    ordering                text NOT NULL DEFAULT '',
    -- version grows when what a delivery is sent with changes.
    version                 bigint NOT NULL DEFAULT 1,
    created_at              bigint NOT NULL,
    updated_at              bigint NOT NULL
);

CREATE INDEX subscriptions_created ON subscriptions (created_at, id);
CREATE INDEX subscriptions_source ON subscriptions (source);

-- subscription_generation is bumped by every transaction that changes a subscription in a way
-- that matters to delivery, which also notifies the other replicas (see Store.listen).
CREATE TABLE subscription_generation (
    id         integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO subscription_generation (id, generation) VALUES (1, 0);

CREATE TABLE events (
    id           text COLLATE "C" PRIMARY KEY,
    type         text NOT NULL,
    payload      bytea NOT NULL,           -- the exact bytes delivered
    traceparent  text NOT NULL DEFAULT '', -- the producer's W3C trace context
    deliveries   integer NOT NULL,         -- fan-out at ingest, repeated to duplicates
    received_at  bigint NOT NULL
);

CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
    id               text COLLATE "C" PRIMARY KEY, -- the webhook-id header
    -- seq is the insertion order: a fifo subscription's deliveries ingested at the same time
    -- go in the order they were stored (SQLite's rowid).
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    event_id         text COLLATE "C" NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    subscription_id  text COLLATE "C" NOT NULL,        -- kept when the subscription is deleted
    status           text NOT NULL,        -- pending | succeeded | failed
    attempts         integer NOT NULL DEFAULT 0, -- HTTP attempts, quick retries included
    step             integer NOT NULL DEFAULT 0, -- durable retries used of delivery.schedule
    next_attempt_at  bigint,               -- NULL once finished
    lease_until      bigint NOT NULL DEFAULT 0,
    -- lease_token grows with every claim: completing, releasing or extending applies only
    -- while the claimer's token is still the row's.
    lease_token      bigint NOT NULL DEFAULT 0,
    -- retry_requested marks a retry asked for while a round was in flight.
    retry_requested  boolean NOT NULL DEFAULT false,
    -- paused marks the pending deliveries of an inactive subscription.
    paused           boolean NOT NULL DEFAULT false,
    last_status_code integer NOT NULL DEFAULT 0,
    last_error       text NOT NULL DEFAULT '',
    created_at       bigint NOT NULL,
    updated_at       bigint NOT NULL,
    finished_at      bigint
);

-- One subscription's due work, in due order: the claim and the next-due look-up.
CREATE INDEX deliveries_queue ON deliveries (subscription_id, next_attempt_at) WHERE status = 'pending' AND NOT paused;
-- One subscription's pending work in ingest order: the head of a fifo subscription.
CREATE INDEX deliveries_fifo ON deliveries (subscription_id, created_at, seq) WHERE status = 'pending' AND NOT paused;
-- One subscription's leases: the in-flight count a claim checks against max_in_flight.
CREATE INDEX deliveries_leased ON deliveries (subscription_id, lease_until) WHERE status = 'pending' AND lease_until != 0;
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, created_at);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE status != 'pending';

CREATE TABLE attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   text COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempted_at  bigint NOT NULL,
    duration      bigint NOT NULL,         -- nanoseconds
    status_code   integer NOT NULL DEFAULT 0,
    error         text NOT NULL DEFAULT '',
    response_body bytea,                   -- the first 1 KiB
    trace_id      text NOT NULL DEFAULT ''
);

CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
