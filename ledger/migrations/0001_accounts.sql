-- One row per account. (kind, ref) names it; shards is how many balance rows it has.
CREATE TABLE IF NOT EXISTS ledger_accounts (
    kind        TEXT NOT NULL,
    ref         TEXT NOT NULL,
    constrained BOOL NOT NULL,
    shards      INT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, ref),
    CONSTRAINT ledger_accounts_shards_positive CHECK (shards >= 1)
)
