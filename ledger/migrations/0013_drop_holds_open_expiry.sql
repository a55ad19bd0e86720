-- Replaced by ledger_holds_unfinished_expiry (0012).
DROP INDEX IF EXISTS ledger_holds_open_expiry
