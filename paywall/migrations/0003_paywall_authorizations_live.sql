CREATE UNIQUE INDEX IF NOT EXISTS paywall_authorizations_live
	ON paywall_authorizations (paywall_id, user_id) WHERE revoked_at IS NULL
