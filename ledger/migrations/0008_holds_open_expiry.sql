-- The sweeper's queue: open holds by expiry.
CREATE INDEX IF NOT EXISTS ledger_holds_open_expiry ON ledger_holds (expires_at) WHERE status = 'open'
