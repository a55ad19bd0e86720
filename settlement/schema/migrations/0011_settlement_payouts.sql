-- The worker's view of a ledger payout (status requested there). status: queued (to be paid,
-- possibly after a back-off), sending (a transaction carries its authorization), confirming (the
-- authorization was used on chain by tx_hash; waiting for finality), failing (cannot be paid;
-- its money goes back once no signed authorization can still be used), settled, failed.
-- nonce = keccak256(payout id), the hot wallet's EIP-3009 nonce. valid_before is the latest
-- signed authorization's expiry (unix seconds), 0 if none was ever signed.
CREATE TABLE IF NOT EXISTS settlement_payouts (
	payout_id UUID PRIMARY KEY,
	chain_id TEXT NOT NULL,
	to_addr TEXT NOT NULL,
	amount_micro INT8 NOT NULL CHECK (amount_micro > 0),
	nonce TEXT NOT NULL,
	status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'confirming', 'failing', 'settled', 'failed')),
	reason TEXT NOT NULL DEFAULT '',
	tx_id UUID NULL,
	tx_hash TEXT NOT NULL DEFAULT '',
	tx_block INT8 NULL,
	valid_before INT8 NOT NULL DEFAULT 0,
	first_signed_at TIMESTAMPTZ NULL,
	first_block INT8 NULL,
	attempts INT8 NOT NULL DEFAULT 0,
	next_attempt_at TIMESTAMPTZ NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
