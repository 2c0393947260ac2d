-- Ordering (per key and target, per route's steps, and link waits).
-- order_key: deliveries to one target sharing it go one at a time (NULL: not
--   ordered). order_seq: acceptance order (event id, route index, step),
--   compared as text. A delivery waits while an earlier pending one shares
--   its target and key, is an earlier step of its route, or remembers a link
--   it reads (remember_task/remember_name vs link_task/link_names, the
--   names as ",a,b," or ",*," for any).
ALTER TABLE deliveries ADD COLUMN order_key TEXT COLLATE "C";
ALTER TABLE deliveries ADD COLUMN order_seq TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN link_task TEXT COLLATE "C";
ALTER TABLE deliveries ADD COLUMN link_names TEXT;
ALTER TABLE deliveries ADD COLUMN remember_task TEXT COLLATE "C";
ALTER TABLE deliveries ADD COLUMN remember_name TEXT;
-- The claim's "is an earlier one of my key pending?" and "is a link I read
-- still being made?" are index lookups.
CREATE INDEX deliveries_order ON deliveries (target, order_key, order_seq) WHERE status = 'pending';
CREATE INDEX deliveries_remember ON deliveries (remember_task, order_seq) WHERE status = 'pending';
-- Deliveries routed in one transaction share next_attempt_at: with the id
-- in the index, the claim's ORDER BY next_attempt_at, id is the index
-- order and stops after LIMIT rows instead of sorting every tie.
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX deliveries_due ON deliveries (target, next_attempt_at, id) WHERE status = 'pending';
