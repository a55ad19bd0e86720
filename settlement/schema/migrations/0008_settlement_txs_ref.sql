CREATE INDEX IF NOT EXISTS settlement_txs_ref ON settlement_txs (purpose, ref)
