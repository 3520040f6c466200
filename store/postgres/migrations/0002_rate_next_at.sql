-- rate_next_at (Unix nanoseconds) is when a rate-limited subscription's next delivery may be
-- claimed: each claim of one advances it by an interval (1s / rate_limit) a delivery claimed,
-- under the subscription's row lock, so that its rate_limit holds across every replica.
ALTER TABLE subscriptions ADD COLUMN rate_next_at bigint NOT NULL DEFAULT 0;
