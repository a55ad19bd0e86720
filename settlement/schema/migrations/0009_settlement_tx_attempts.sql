-- One row per signed version of a transaction (the first, then each fee bump); any of them may
-- be the one mined. raw is the signed transaction, stored before it is broadcast.
CREATE TABLE IF NOT EXISTS settlement_tx_attempts (
	hash TEXT PRIMARY KEY,
	tx_id UUID NOT NULL REFERENCES settlement_txs (id),
	tip_wei TEXT NOT NULL,
	fee_cap_wei TEXT NOT NULL,
	raw BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL
)
