-- One row per top-up intent: the EIP-3009 TransferWithAuthorization a user is asked to sign
-- (wallet → treasury). nonce = keccak256(id) is what the token makes single-use; valid_after and
-- valid_before are unix seconds, as signed. Money is credited by the deposit watcher at
-- finality, keyed (chain, token, authorizer, nonce), never from this row's status.
CREATE TABLE IF NOT EXISTS settlement_topups (
	id UUID PRIMARY KEY,
	chain_id TEXT NOT NULL,
	token TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
	wallet TEXT NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
	treasury TEXT NOT NULL CHECK (treasury ~ '^0x[0-9a-f]{40}$'),
	amount_micro INT8 NOT NULL CHECK (amount_micro > 0),
	nonce TEXT NOT NULL CHECK (nonce ~ '^0x[0-9a-f]{64}$'),
	valid_after INT8 NOT NULL,
	valid_before INT8 NOT NULL,
	paywall_id TEXT NOT NULL DEFAULT '',
	user_id TEXT NOT NULL DEFAULT '',
	status TEXT NOT NULL CHECK (status IN ('awaiting_signature', 'signed', 'submitted', 'credited', 'failed')),
	signature TEXT NOT NULL DEFAULT '',
	tx_hash TEXT NOT NULL DEFAULT '',
	reason TEXT NOT NULL DEFAULT '',
	next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	UNIQUE (chain_id, wallet, nonce)
)
