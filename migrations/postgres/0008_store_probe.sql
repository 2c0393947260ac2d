-- One row the health probe rewrites (as SQLite's 0007): readiness and the
-- systemd watchdog report whether the instance can really commit (a full
-- disk, a read-only or recovering server, a lock held elsewhere fail it),
-- not only whether a read answers.
CREATE TABLE store_probe (id BIGINT PRIMARY KEY CHECK (id = 1), at BIGINT NOT NULL);
