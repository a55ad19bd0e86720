-- One row per paywall (an app). key_hash is the SHA-256 of the current API key; the key itself
-- is never stored. Mode cannot change after creation.
CREATE TABLE IF NOT EXISTS paywalls (
	id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
	name TEXT NOT NULL,
	owner TEXT NOT NULL,
	mode TEXT NOT NULL CHECK (mode IN ('builtin', 'byok')),
	upstream TEXT NOT NULL,
	upstream_key TEXT NOT NULL DEFAULT '',
	markup_bps INT8 NOT NULL CHECK (markup_bps >= 0),
	default_max_tokens INT8 NOT NULL CHECK (default_max_tokens > 0),
	min_completion_tokens INT8 NOT NULL CHECK (min_completion_tokens >= 0),
	template_authorize TEXT NOT NULL DEFAULT '',
	template_topup TEXT NOT NULL DEFAULT '',
	payout_address TEXT NOT NULL DEFAULT '',
	max_concurrent INT8 NOT NULL DEFAULT 0 CHECK (max_concurrent >= 0),
	rate_per_minute INT8 NOT NULL DEFAULT 0 CHECK (rate_per_minute >= 0),
	key_hash BYTEA NOT NULL UNIQUE,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
