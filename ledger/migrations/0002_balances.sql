-- Materialized balances: one row for a wallet, several shard rows for a shared account, so that
-- captures of different users never queue on one row. posted always equals the sum of the row's
-- entries; held is the sum of the wallet's open holds. The checks are the last line of defence:
-- a constrained row never has less than nothing available.
CREATE TABLE IF NOT EXISTS ledger_balances (
    kind        TEXT NOT NULL,
    ref         TEXT NOT NULL,
    shard       INT NOT NULL,
    constrained BOOL NOT NULL,
    posted      BIGINT NOT NULL DEFAULT 0,
    held        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, ref, shard),
    CONSTRAINT ledger_balances_account_fk FOREIGN KEY (kind, ref) REFERENCES ledger_accounts (kind, ref),
    CONSTRAINT ledger_balances_held_nonnegative CHECK (held >= 0),
    CONSTRAINT ledger_balances_available_nonnegative CHECK (NOT constrained OR posted - held >= 0)
)
