// Package paywall owns paywalls (an app in front of an LLM upstream: built-in provider or BYOK,
// markup, budgets, message templates, payout address, per-user caps), their API keys (random,
// shown once, stored as SHA-256 hashes), the authorizations that link a (paywall, user id) to
// a wallet, the signed short-lived link tokens of the hosted pages, and the single-use nonces
// of Sign-In with Ethereum.
//
// Lookups on the request path (ByKey, Authorization) are cached in-process and in Redis; a new
// authorization, a revocation or a key rotation reaches every replica through Redis pub/sub
// within milliseconds, and a short in-process TTL bounds staleness if a message is lost.
//
// A BYOK paywall's upstream credential is sealed (AES-256-GCM, Options.SecretsKey) before it
// reaches the database or Redis; the plaintext lives only in the process memory that sends it.
//
// It sits on the request path: it must never import go-ethereum or settlement/.
// docs/paywall.md describes it for users.
package paywall

import (
	"errors"
	"time"
)

// Domain errors. Methods document which they can return; callers decide with errors.Is.
var (
	// ErrNotFound: no paywall has that id.
	ErrNotFound = errors.New("paywall: not found")
	// ErrUnknownKey: the API key is unknown, malformed, or was rotated away.
	ErrUnknownKey = errors.New("paywall: unknown API key")
	// ErrNotAuthorized: the user has not authorized the paywall (or revoked it).
	ErrNotAuthorized = errors.New("paywall: user has not authorized this paywall")
	// ErrBadUserID: a user id that is empty, too long or not URL-safe.
	ErrBadUserID = errors.New("paywall: bad user id")
	// ErrBadWallet: a wallet that is not a 0x-prefixed 20-byte hex address.
	ErrBadWallet = errors.New("paywall: bad wallet address")
	// ErrInvalid wraps every invalid paywall setting (mode, markup, budgets, templates, …).
	ErrInvalid = errors.New("paywall: invalid paywall")
	// ErrBadToken: a link token that is malformed, tampered with, or for another purpose.
	ErrBadToken = errors.New("paywall: bad link token")
	// ErrExpiredToken: a genuine link token whose time is up.
	ErrExpiredToken = errors.New("paywall: link token expired")
	// ErrNonceUsed: a nonce that was never issued, expired, or was already consumed.
	ErrNonceUsed = errors.New("paywall: nonce unknown, expired or already used")
	// ErrNoSecretsKey: a BYOK credential to store or read, and no secrets key configured.
	ErrNoSecretsKey = errors.New("paywall: paywall.secrets_key is not set (TOLLGATE_PAYWALL_SECRETS_KEY)")
	// ErrSealedCredential: a stored sealed secret (a BYOK upstream credential, a webhook
	// signing secret) that does not open — sealed with another secrets key, copied from another
	// paywall, tampered with, or still in plaintext.
	ErrSealedCredential = errors.New("paywall: sealed secret does not open")
)

// Mode says who pays the upstream.
type Mode string

// Modes.
const (
	// ModeBuiltin: the operator's provider (OpenRouter) with the operator's key; the provider's
	// cost is part of every charge.
	ModeBuiltin Mode = "builtin"
	// ModeBYOK: the app's own upstream and credential; the developer pays the provider.
	ModeBYOK Mode = "byok"
)

// Templates are the texts of the paywall messages, Go text/template strings. Both see
// {{.Link}} (the page to open) and {{.Paywall}} (the paywall's name); TopUp also sees
// {{.BalanceUSDC}} (the available balance, e.g. "0.42"). Empty means the default text.
type Templates struct {
	Authorize string
	TopUp     string
}

// Paywall is one app's configuration.
type Paywall struct {
	ID, Name, Owner string
	Mode            Mode
	// Upstream is the value of the routing header: "openrouter" (Options.BuiltinUpstream) for
	// built-in paywalls, the BYOK upstream's name (an Envoy cluster) otherwise.
	Upstream string
	// UpstreamKey is the BYOK credential sent upstream as Authorization: Bearer; empty for
	// built-in paywalls, which use the operator's key from the configuration. The Store seals
	// it (Options.SecretsKey) before it reaches the database or Redis, and returns it opened.
	UpstreamKey string
	// MarkupBps is the markup over the model's price, in basis points (100 = 1 %).
	MarkupBps int64
	// DefaultMaxTokens is the completion budget when a request sets none.
	DefaultMaxTokens int64
	// MinCompletionTokens: when the wallet can afford fewer completion tokens than this, the
	// user gets the top-up message instead of a clipped answer.
	MinCompletionTokens int64
	Templates           Templates
	// PayoutAddress receives the developer's withdrawals (lower-case 0x address, may be "").
	PayoutAddress string
	// MaxConcurrent caps one user's concurrent requests (0 = no cap).
	MaxConcurrent int
	// RatePerMinute caps one user's requests per minute (0 = no cap).
	RatePerMinute int
	CreatedAt     time.Time
}

// Authorization links a paywall's user id to a wallet. The same wallet serves every paywall
// the person authorizes.
type Authorization struct {
	PaywallID, UserID string
	Wallet            string // lower-case 0x address
	CreatedAt         time.Time
}
