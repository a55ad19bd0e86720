package ledger

// Transfer metadata: the keys Tollgate's programs write on the transfers they ask for, and the
// API (history, refunds), webhooks and the CLI read back. The ledger stores a transfer's
// metadata as given and reads none of it; it writes only MetaReason, on a reversal. The book is
// immutable, so a key's meaning never changes once written: add keys, never repurpose one.
const (
	// MetaPaywall and MetaUser say whose a capture, a charge or a refund is: the paywall (app)
	// and its user id. A paywall sees only its own transfers of a wallet every app shares.
	MetaPaywall = "paywall"
	MetaUser    = "user"

	// MetaDescription is a manual charge's description; the app's own metadata is kept under
	// MetaAppPrefix + its key.
	MetaDescription = "description"
	MetaAppPrefix   = "app."

	// A capture of a request billed through the proxy (extproc): its Tollgate and Envoy
	// request ids, the API it spoke (chat, responses, embeddings, completions), the model, the
	// provider's id for the generation, and the token counts the charge was priced from (cached
	// and reasoning only when there were any).
	MetaRequestID        = "request_id"
	MetaAPI              = "api"
	MetaEnvoyRequestID   = "envoy_request_id"
	MetaModel            = "model"
	MetaProviderID       = "provider_id"
	MetaPromptTokens     = "prompt_tokens"
	MetaCompletionTokens = "completion_tokens"
	MetaCachedTokens     = "cached_tokens" //nolint:gosec // a metadata key, not a credential
	MetaReasoningTokens  = "reasoning_tokens"
	// MetaEstimateReason is present only on a capture charged from an estimate: why there was
	// no usage to charge (client_gone, no_usage, …).
	MetaEstimateReason = "estimate_reason"
	// MetaUsageSource is "provider_record" on a capture charged from the built-in provider's
	// record of a generation cut short, rather than from the stream's usage.
	MetaUsageSource = "usage_source"
	// MetaProviderReportedCost is what the built-in provider said the request cost it, in
	// micro-USD, beside the catalog's price in the capture's split.
	MetaProviderReportedCost = "provider_reported_cost_micro"

	// MetaReason is why a transfer was reversed (written by Reverse), MetaBy who did it
	// ("operator" for the CLI).
	MetaReason = "reason"
	MetaBy     = "by"

	// A deposit credited by the settlement worker: the chain event (transaction hash, log
	// position, block, token contract), whether it came as a top-up or a plain transfer, the
	// top-up it settles, and for a transfer assigned to a wallet by hand, its sender and who
	// assigned it.
	MetaTxHash     = "tx_hash"
	MetaLogPos     = "log_pos"
	MetaBlock      = "block"
	MetaToken      = "token"
	MetaKind       = "kind"
	MetaTopUpID    = "topup_id"
	MetaFrom       = "from"
	MetaAssignedBy = "assigned_by"
)
