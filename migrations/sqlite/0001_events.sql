-- Events as received: the exact verified body, its type and dedupe key.
-- routed_at stays NULL until the router has created the event's deliveries.
CREATE TABLE events (
    id           TEXT PRIMARY KEY NOT NULL,
    source       TEXT NOT NULL,
    dedupe_key   TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      BLOB NOT NULL,
    received_at  INTEGER NOT NULL,
    routed_at    INTEGER,
    lease_until  INTEGER,
    UNIQUE (source, dedupe_key)
);

CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_unrouted ON events (received_at) WHERE routed_at IS NULL;
