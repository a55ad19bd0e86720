CREATE INDEX IF NOT EXISTS settlement_tx_attempts_tx ON settlement_tx_attempts (tx_id, created_at)
