-- Fewer indexes to maintain on the hot path (every insert and status change
-- touches each one):
-- * events are listed by id (time-ordered), not by received_at;
-- * deliveries by event are served by the UNIQUE (event_id, route, step) index;
-- * listing by status walks the id order with a filter.
DROP INDEX IF EXISTS events_received;
DROP INDEX IF EXISTS deliveries_event;
DROP INDEX IF EXISTS deliveries_status;
-- The delivery worker's "when is the next one due" is a MIN over this.
CREATE INDEX deliveries_pending_due ON deliveries (next_attempt_at) WHERE status = 'pending';
