-- A target's rate_limit is one budget for every instance (GCRA): tat is the
-- theoretical arrival time of the next request, Unix ms. PostgreSQL only:
-- one SQLite store has one process, which keeps its budget in memory.
CREATE TABLE rate_limits (
    target  TEXT PRIMARY KEY NOT NULL,
    tat     BIGINT NOT NULL
);
