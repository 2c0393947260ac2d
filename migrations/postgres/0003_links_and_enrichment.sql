-- What a send step created (a Jira issue key, a ClickUp task id), remembered
-- under a name for the ClickUp task the event was about (`remember:`).
CREATE TABLE links (
    task_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (task_id, name)
);

-- Routing that needs the ClickUp task is retried like a delivery when the
-- fetch fails: how often it was tried, and why it last failed.
ALTER TABLE events ADD COLUMN route_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN route_error TEXT;
