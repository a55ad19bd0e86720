-- Every USDC transfer to the treasury the watcher attributed to a wallet, from the moment it is
-- seen (pending) to finality (credited), or dropped when a reorg removed it before finality.
-- The key is the transfer's place on chain: (chain, tx hash, position of the log in its
-- receipt), never the block-relative log index. ledger_key is the ledger's idempotency key:
-- chain:token:authorizer:nonce for a relayed top-up, chain:txhash:logpos for a plain transfer.
CREATE TABLE IF NOT EXISTS settlement_deposits (
	chain_id TEXT NOT NULL,
	tx_hash TEXT NOT NULL,
	log_pos INT8 NOT NULL CHECK (log_pos >= 0),
	token TEXT NOT NULL,
	wallet TEXT NOT NULL,
	amount_micro INT8 NOT NULL CHECK (amount_micro > 0),
	block_number INT8 NOT NULL,
	block_hash TEXT NOT NULL,
	kind TEXT NOT NULL CHECK (kind IN ('topup', 'transfer')),
	topup_id UUID NULL,
	status TEXT NOT NULL CHECK (status IN ('pending', 'credited', 'dropped')),
	ledger_key TEXT NOT NULL,
	transfer_id TEXT NOT NULL DEFAULT '',
	seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (chain_id, tx_hash, log_pos)
)
