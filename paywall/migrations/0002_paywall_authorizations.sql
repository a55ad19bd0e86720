-- (paywall, user id) → wallet. A revocation sets revoked_at; rows are never deleted, so the
-- history of who linked which wallet stays. At most one live row per (paywall, user): see 0003.
CREATE TABLE IF NOT EXISTS paywall_authorizations (
	id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
	paywall_id UUID NOT NULL REFERENCES paywalls (id),
	user_id TEXT NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
	wallet TEXT NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	revoked_at TIMESTAMPTZ NULL
)
