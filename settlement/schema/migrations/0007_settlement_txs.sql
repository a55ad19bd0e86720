-- Every transaction the hot wallet signs, by nonce. The signed bytes of each attempt are in
-- settlement_tx_attempts, written before the first broadcast. status: pending (not yet final),
-- final (its receipt is final; receipt_status 1 = success, 0 = reverted), lost (the nonce was
-- taken by a transaction that is not one of ours).
CREATE TABLE IF NOT EXISTS settlement_txs (
	id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
	chain_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	nonce INT8 NOT NULL CHECK (nonce >= 0),
	purpose TEXT NOT NULL CHECK (purpose IN ('topup', 'payout')),
	ref TEXT NOT NULL,
	to_addr TEXT NOT NULL,
	data BYTEA NOT NULL,
	gas INT8 NOT NULL,
	status TEXT NOT NULL CHECK (status IN ('pending', 'final', 'lost')),
	receipt_status INT8 NULL,
	mined_hash TEXT NOT NULL DEFAULT '',
	mined_block INT8 NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	UNIQUE (chain_id, sender, nonce)
)
