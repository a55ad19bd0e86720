-- One row per paywall that has asked for a withdrawal. A withdrawal writes its paywall's row
-- first and keeps the transaction open until the ledger has recorded the payout, so the
-- 24-hour cap check and the ledger write of two concurrent withdrawals cannot interleave.
CREATE TABLE IF NOT EXISTS api_payout_guards (
    paywall_id TEXT PRIMARY KEY,
    checked_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
