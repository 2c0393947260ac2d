-- Routing results and deliveries.
-- An event's deliveries are inserted in the same transaction that sets its
-- routed_at, so an event is either unrouted (and will be routed again after a
-- crash) or routed with all its deliveries.
ALTER TABLE events ADD COLUMN matched_routes TEXT;

CREATE TABLE deliveries (
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,   -- dlv_..., the Idempotency-Key
    event_id         TEXT COLLATE "C" NOT NULL REFERENCES events (id),
    route            TEXT NOT NULL,
    step             BIGINT NOT NULL,             -- index in the route's send list
    target           TEXT NOT NULL,
    status           TEXT NOT NULL,               -- pending | delivered | dead
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,             -- Unix ms
    lease_until      BIGINT,                      -- claimed by a worker until (Unix ms)
    context          TEXT NOT NULL,               -- JSON: extracted values (and later the enriched task)
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    UNIQUE (event_id, route, step)
);

CREATE INDEX deliveries_due ON deliveries (target, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_status ON deliveries (status, updated_at);

CREATE TABLE attempts (
    delivery_id   TEXT NOT NULL REFERENCES deliveries (id),
    n             BIGINT NOT NULL,                -- 1 for the first attempt
    at            BIGINT NOT NULL,                -- Unix ms, when the answer (or error) came
    duration_ms   BIGINT NOT NULL,
    status_code   BIGINT,
    response      TEXT,                           -- bounded excerpt of the answer
    error         TEXT,
    outcome       TEXT NOT NULL,                  -- delivered | retry | dead
    PRIMARY KEY (delivery_id, n)
);
