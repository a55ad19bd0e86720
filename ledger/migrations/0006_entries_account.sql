-- An account's history, newest first.
CREATE INDEX IF NOT EXISTS ledger_entries_account ON ledger_entries (kind, ref, created_at, transfer_id)
