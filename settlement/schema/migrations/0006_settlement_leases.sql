-- One active worker per hot wallet and chain. epoch grows at every takeover; every write that
-- allocates a nonce or stores a signed transaction checks holder and epoch in the same database
-- transaction, so a worker that lost its lease cannot send.
CREATE TABLE IF NOT EXISTS settlement_leases (
	chain_id TEXT NOT NULL,
	wallet TEXT NOT NULL,
	holder TEXT NOT NULL,
	epoch INT8 NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (chain_id, wallet)
)
