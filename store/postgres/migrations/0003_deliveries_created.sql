-- GET /v1/deliveries lists every subscription's deliveries newest first, a page at a time: this
-- index serves that order, so that a page reads its rows instead of sorting the whole table. Its
-- cost: an entry per delivery, and, since most updates of a delivery change an indexed column
-- (status, lease_until: they are not HOT), a new entry per claim and outcome, as each of the
-- table's other indexes already takes. See store/sqlite's 0004_deliveries_created.sql.
CREATE INDEX deliveries_created ON deliveries (created_at, id);
