-- A transfer is reversed at most once.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_transfers_reverses_key ON ledger_transfers (reverses)
