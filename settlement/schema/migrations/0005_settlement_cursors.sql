-- The last finalized block whose deposits were fully processed, per chain and token; the watcher
-- resumes after it.
CREATE TABLE IF NOT EXISTS settlement_cursors (
	chain_id TEXT NOT NULL,
	token TEXT NOT NULL,
	block_number INT8 NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (chain_id, token)
)
