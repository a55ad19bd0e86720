CREATE INDEX IF NOT EXISTS ledger_payouts_paywall ON ledger_payouts (paywall, created_at)
