CREATE INDEX IF NOT EXISTS ledger_payouts_status ON ledger_payouts (status, created_at)
