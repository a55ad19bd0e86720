-- Reservations on wallets. A hold is open until it is captured, voided or expired (by the
-- database's clock); its amount is part of the wallet's held balance while it is open.
CREATE TABLE IF NOT EXISTS ledger_holds (
    id              UUID NOT NULL DEFAULT gen_random_uuid(),
    idempotency_key TEXT NOT NULL,
    request_hash    BYTEA NOT NULL,
    wallet          TEXT NOT NULL,
    paywall         TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    status          TEXT NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ NULL,
    charged_micro   BIGINT NULL,
    shortfall_micro BIGINT NULL,
    metadata        JSONB NULL,
    PRIMARY KEY (id),
    CONSTRAINT ledger_holds_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT ledger_holds_amount_positive CHECK (amount > 0),
    CONSTRAINT ledger_holds_status_valid CHECK (status IN ('open', 'captured', 'voided', 'expired'))
)
