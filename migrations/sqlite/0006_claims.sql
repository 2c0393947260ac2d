-- Claims of a delivery since its last recorded attempt. A claim that ends
-- without an attempt record means the process stopped (kill -9, a crash)
-- while rendering or sending it; after a few, the delivery is made dead
-- instead of being retried blindly into the same crash.
ALTER TABLE deliveries ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
