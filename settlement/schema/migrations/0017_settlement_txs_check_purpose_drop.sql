-- 0007's inline CHECK on purpose, as CockroachDB names it (0015 replaces it).
ALTER TABLE settlement_txs DROP CONSTRAINT IF EXISTS check_purpose
