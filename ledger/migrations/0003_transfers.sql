-- Transfers are immutable business events. legs_applied and legs_sum are computed, in the same
-- statement, from the balance rows the transfer really changed: the check refuses a transfer that
-- would change fewer rows than it meant to or that does not sum to zero.
CREATE TABLE IF NOT EXISTS ledger_transfers (
    id              UUID NOT NULL DEFAULT gen_random_uuid(),
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    BYTEA NOT NULL,
    hold_id         UUID NULL,
    payout_id       UUID NULL,
    reverses        UUID NULL,
    metadata        JSONB NULL,
    legs_expected   INT NOT NULL,
    legs_applied    INT NOT NULL,
    legs_sum        BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id),
    CONSTRAINT ledger_transfers_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT ledger_transfers_complete CHECK (legs_applied = legs_expected AND legs_sum = 0)
)
