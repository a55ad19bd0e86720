-- USDC transfers to the treasury, final on chain, from an address that no user had linked when
-- the watcher reached them. Nothing is credited for them until they are assigned to a wallet:
-- by an operator (`tollgate settle assign`), or by the watcher once their sender links that
-- address. Either way the ledger key is the transfer's on-chain identity, chain:txhash:logpos,
-- the key the watcher gives a plain transfer, so the money is credited once whoever assigns it.
-- status: unassigned; assigning (a wallet was chosen and claimed, the ledger credit may not be
-- written yet: assigning again to the same wallet finishes it); assigned. assigned_by:
-- operator or watcher. checked_at orders the watcher's look for newly linked senders.
CREATE TABLE IF NOT EXISTS settlement_unassigned (
	id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
	chain_id TEXT NOT NULL,
	tx_hash TEXT NOT NULL,
	log_pos INT8 NOT NULL CHECK (log_pos >= 0),
	token TEXT NOT NULL,
	from_addr TEXT NOT NULL,
	amount_micro INT8 NOT NULL CHECK (amount_micro > 0),
	block_number INT8 NOT NULL,
	block_hash TEXT NOT NULL,
	ledger_key TEXT NOT NULL,
	status TEXT NOT NULL CHECK (status IN ('unassigned', 'assigning', 'assigned')),
	wallet TEXT NOT NULL DEFAULT '',
	assigned_by TEXT NOT NULL DEFAULT '',
	transfer_id TEXT NOT NULL DEFAULT '',
	seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	checked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	UNIQUE (chain_id, tx_hash, log_pos)
)
