-- A replayed delivery gets a fresh retry budget: attempts are numbered on
-- (the history stays), and the retry policy counts from attempts_base.
ALTER TABLE deliveries ADD COLUMN attempts_base BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_source ON events (source, id);
CREATE INDEX deliveries_updated ON deliveries (updated_at) WHERE status IN ('delivered', 'dead');
