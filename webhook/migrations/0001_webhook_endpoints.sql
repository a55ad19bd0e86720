-- One webhook per paywall: where its events go, the signing secret sealed under
-- paywall.secrets_key, and how far (by the database's clock) the ledger has been read for it.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    paywall       TEXT NOT NULL,
    url           TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    scanned_to    TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (paywall)
)
