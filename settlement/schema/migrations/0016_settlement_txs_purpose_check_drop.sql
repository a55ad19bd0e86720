-- 0007's inline CHECK on purpose, as PostgreSQL names it (0015 replaces it).
ALTER TABLE settlement_txs DROP CONSTRAINT IF EXISTS settlement_txs_purpose_check
