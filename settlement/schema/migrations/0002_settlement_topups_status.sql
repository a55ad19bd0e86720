CREATE INDEX IF NOT EXISTS settlement_topups_status ON settlement_topups (chain_id, status, next_attempt_at)
