-- A paywall's own price for a model; it wins over pricing_models as a whole row.
-- paywall_id names paywall.paywalls(id) (a UUID, as text); no foreign key, so pricing's tables do not depend on
-- the order in which packages migrate.
CREATE TABLE IF NOT EXISTS pricing_overrides (
	paywall_id TEXT NOT NULL,
	model TEXT NOT NULL,
	input NUMERIC NOT NULL CHECK (input >= 0),
	output NUMERIC NOT NULL CHECK (output >= 0),
	cached_input NUMERIC NULL CHECK (cached_input >= 0),
	cache_write NUMERIC NULL CHECK (cache_write >= 0),
	reasoning NUMERIC NULL CHECK (reasoning >= 0),
	request NUMERIC NOT NULL DEFAULT 0 CHECK (request >= 0),
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (paywall_id, model)
)
