-- Claims of a delivery since its last recorded attempt (as SQLite's 0006).
-- A claim that ends without an attempt record means the instance stopped
-- (kill -9, a crash) while rendering or sending it, or its lease expired;
-- after a few, the delivery is made dead instead of being retried blindly
-- into the same crash.
ALTER TABLE deliveries ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
