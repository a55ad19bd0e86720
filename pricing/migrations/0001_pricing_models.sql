-- Base prices per model, as imported (from OpenRouter's /api/v1/models or by an admin).
-- Rates are USDC per million tokens (request: per request); NULL means "falls back"
-- (cached_input and cache_write to input, reasoning to output); see pricing.Price.
CREATE TABLE IF NOT EXISTS pricing_models (
	model TEXT PRIMARY KEY,
	input NUMERIC NOT NULL CHECK (input >= 0),
	output NUMERIC NOT NULL CHECK (output >= 0),
	cached_input NUMERIC NULL CHECK (cached_input >= 0),
	cache_write NUMERIC NULL CHECK (cache_write >= 0),
	reasoning NUMERIC NULL CHECK (reasoning >= 0),
	request NUMERIC NOT NULL DEFAULT 0 CHECK (request >= 0),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
