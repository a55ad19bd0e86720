-- The pruner deletes answers older than the retention (serve.api.idempotency_retention) in
-- batches, oldest first: this index finds them without reading the table.
CREATE INDEX IF NOT EXISTS api_idempotency_created_at ON api_idempotency (created_at)
