-- Most deliveries have no ordering key and remember nothing: they need no
-- entry in these two indexes, yet each insert and each status change of one
-- paid for both. The claim's lookups (`order_key = ...`,
-- `remember_task = ...`) imply IS NOT NULL, so SQLite still uses them.
DROP INDEX IF EXISTS deliveries_order;
CREATE INDEX deliveries_order ON deliveries (target, order_key, order_seq)
    WHERE status = 'pending' AND order_key IS NOT NULL;
DROP INDEX IF EXISTS deliveries_remember;
CREATE INDEX deliveries_remember ON deliveries (remember_task, order_seq)
    WHERE status = 'pending' AND remember_task IS NOT NULL;
