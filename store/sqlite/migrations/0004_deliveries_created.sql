-- GET /v1/deliveries lists every subscription's deliveries newest first, a page at a time.
-- Without an index in that order each page would read and sort the whole table (a million
-- rows on a busy gateway); with it, a page reads its rows and stops. It costs each ingested
-- delivery one more index entry, written once: created_at and id never change, so the hot
-- updates (claims, leases, outcomes) do not touch it. No other filter gets an index: one
-- subscription's list and its recovery window use deliveries_subscription, and status and
-- event type are checked on the rows this index walks (a status index would be rewritten by
-- every outcome).
CREATE INDEX deliveries_created ON deliveries (created_at, id);
