-- Append-only legs of transfers; the entries of one transfer sum to zero.
CREATE TABLE IF NOT EXISTS ledger_entries (
    transfer_id UUID NOT NULL,
    leg         INT NOT NULL,
    kind        TEXT NOT NULL,
    ref         TEXT NOT NULL,
    shard       INT NOT NULL,
    amount      BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (transfer_id, leg),
    CONSTRAINT ledger_entries_nonzero CHECK (amount <> 0)
)
