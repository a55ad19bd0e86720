-- Withdrawals of earnings: requested (money in flight), then settled or failed.
CREATE TABLE IF NOT EXISTS ledger_payouts (
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    paywall     TEXT NOT NULL,
    chain_id    TEXT NOT NULL,
    to_address  TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    status      TEXT NOT NULL,
    tx_hash     TEXT NULL,
    reason      TEXT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id),
    CONSTRAINT ledger_payouts_amount_positive CHECK (amount > 0),
    CONSTRAINT ledger_payouts_status_valid CHECK (status IN ('requested', 'settled', 'failed'))
)
