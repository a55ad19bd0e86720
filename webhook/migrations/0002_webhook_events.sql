-- The outbox: one row per event, keyed by the event's stable id so that producers on every
-- replica, and rescans of the same window, insert it once. body is the exact JSON sent (and
-- signed) on every attempt.
CREATE TABLE IF NOT EXISTS webhook_events (
    id              TEXT NOT NULL,
    paywall         TEXT NOT NULL,
    type            TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ NULL,
    PRIMARY KEY (id),
    CONSTRAINT webhook_events_status_valid CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled'))
)
