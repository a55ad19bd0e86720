package paywall

import (
	"time"
)

// Purpose says which page a link token opens; a token is refused by the others.
type Purpose string

// Purposes.
const (
	PurposeAuthorize Purpose = "authorize" // /connect: sign in with a wallet
	PurposeTopUp     Purpose = "topup"     // /topup: add USDC
	PurposeWallet    Purpose = "wallet"    // /wallet: balance and history
)

// Links makes and checks the signed, short-lived tokens of hosted-page links.
type Links struct {
	BaseURL string        // the public URL of the hosted pages, e.g. https://pay.example.com
	Secret  []byte        // HMAC-SHA256 key, at least 32 bytes
	TTL     time.Duration // how long a token stays valid
	Now     func() time.Time
}

// LinkClaims is what a valid token says.
type LinkClaims struct {
	PaywallID, UserID string
	Purpose           Purpose
	ExpiresAt         time.Time
}

// URL returns the page link for a paywall's user: BaseURL + "/connect?t=…" (authorize),
// "/topup?t=…" or "/wallet?t=…".
func (l Links) URL(paywallID, userID string, p Purpose) string { return "" }

// Verify checks a token for a purpose.
// It can return: ErrBadToken, ErrExpiredToken.
func (l Links) Verify(token string, p Purpose) (LinkClaims, error) {
	return LinkClaims{}, errNotBuilt
}
