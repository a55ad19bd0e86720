// Package pricing owns what a request costs: exact decimal prices per million tokens for each
// kind of token plus a per-request fee, the markup a paywall adds, the rounding (up, once per
// request, to a whole micro-USDC), the split of a charge between the built-in provider, the
// platform and the developer, the affordability clamp, and the catalog of model prices
// (imported from OpenRouter's /api/v1/models, with per-paywall overrides) stored in
// PostgreSQL/CockroachDB and cached in-process.
//
// It sits on the request path: it must never import go-ethereum or settlement/.
// docs/pricing.md describes the rules for users.
package pricing
