-- A transfer is reversed at most once. Partial: ordinary transfers add no entry.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_transfers_reverses_key ON ledger_transfers (reverses) WHERE reverses IS NOT NULL
