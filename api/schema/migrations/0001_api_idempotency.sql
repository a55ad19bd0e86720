-- Answers to the API's POSTs made with an Idempotency-Key (charges, payouts), per paywall and
-- operation: the same key with the same request gets the stored answer again; with another
-- request, a conflict. response holds the exact bytes that were sent.
CREATE TABLE IF NOT EXISTS api_idempotency (
    paywall_id      TEXT NOT NULL,
    operation       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          INT NOT NULL,
    response        BYTEA NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (paywall_id, operation, idempotency_key)
)
