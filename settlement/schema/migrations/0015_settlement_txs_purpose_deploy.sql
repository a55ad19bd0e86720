-- The hot wallet also sends 'deploy' transactions: the factory call that deploys a top-up's
-- counterfactual wallet (ERC-6492) before its transfer is relayed; ref is the top-up id. This
-- constraint replaces the one 0007 made inline, which 0016 and 0017 drop. Replaying it fails
-- with duplicate_object (42710), which migrate.Apply takes as already done.
ALTER TABLE settlement_txs ADD CONSTRAINT settlement_txs_purpose_known CHECK (purpose IN ('topup', 'payout', 'deploy'))
