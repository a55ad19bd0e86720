CREATE INDEX IF NOT EXISTS settlement_deposits_wallet ON settlement_deposits (wallet, status)
