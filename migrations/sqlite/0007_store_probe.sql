-- One row the health probe rewrites: readiness and the systemd watchdog
-- report whether the writer can really commit (a full disk, a read-only
-- file system or a lock held elsewhere fail it), not only whether a read
-- answers.
CREATE TABLE store_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
