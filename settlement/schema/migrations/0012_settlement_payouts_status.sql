CREATE INDEX IF NOT EXISTS settlement_payouts_status ON settlement_payouts (chain_id, status, next_attempt_at)
