-- The deliverers' queue: pending events by when they are due.
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (next_attempt_at) WHERE status = 'pending'
