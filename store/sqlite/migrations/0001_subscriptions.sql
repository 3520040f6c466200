-- Subscriptions: webhooks (dialect 1), registrations (dialect 2) and the ones gateway.yaml
-- declares, in one table. Times are Unix nanoseconds.
CREATE TABLE subscriptions (
    id                      TEXT PRIMARY KEY,
    kind                    TEXT NOT NULL,
    source                  TEXT NOT NULL,
    url                     TEXT NOT NULL,
    events                  TEXT NOT NULL,              -- JSON array; ["*"] is every type
    headers                 TEXT,                       -- JSON object, NULL when none
    plugins                 TEXT NOT NULL DEFAULT '[]', -- JSON array of {name, config}
    request_id              TEXT NOT NULL DEFAULT '',
    source_sender_id        TEXT NOT NULL DEFAULT '',
    username                TEXT NOT NULL DEFAULT '',
    password                TEXT NOT NULL DEFAULT '',
    active                  INTEGER NOT NULL DEFAULT 1,
    deactivated_at          INTEGER,
    in_error_state          INTEGER NOT NULL DEFAULT 0,
    error_state_reason      TEXT NOT NULL DEFAULT '',
    detected_error_state_at INTEGER,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
) STRICT;

CREATE INDEX subscriptions_created ON subscriptions (created_at, id);
CREATE INDEX subscriptions_source ON subscriptions (source);
