CREATE INDEX IF NOT EXISTS paywall_authorizations_wallet ON paywall_authorizations (wallet)
