-- The pruner's index: finished events (delivered, failed, cancelled) by when they finished.
CREATE INDEX IF NOT EXISTS webhook_events_finished ON webhook_events (finished_at) WHERE finished_at IS NOT NULL
