-- Events as received: the exact verified body, its type and dedupe key.
-- routed_at stays NULL until the router has created the event's deliveries.
-- Times are Unix milliseconds (BIGINT), as in the SQLite store, so both
-- backends share their SQL and `store copy` moves rows as they are.
CREATE TABLE events (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    source       TEXT NOT NULL,
    dedupe_key   TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    received_at  BIGINT NOT NULL,
    routed_at    BIGINT,
    lease_until  BIGINT,
    UNIQUE (source, dedupe_key)
);

CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_unrouted ON events (received_at) WHERE routed_at IS NULL;
