CREATE INDEX IF NOT EXISTS settlement_unassigned_status ON settlement_unassigned (chain_id, status, checked_at)
