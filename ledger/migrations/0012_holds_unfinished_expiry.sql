-- The sweeper's queue: unfinished holds by expiry. Its predicate is on finished_at, which only
-- the sweeper's query states, so the planner never picks this index for a lookup of one hold by
-- id (the old index on status = 'open' it picked, and every lookup then walked the entries of
-- all recently finished holds until vacuum removed them).
CREATE INDEX IF NOT EXISTS ledger_holds_unfinished_expiry ON ledger_holds (expires_at) WHERE finished_at IS NULL
