package paywall

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
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

// purposeCodes are the one-byte forms of the purposes inside a token.
var purposeCodes = map[Purpose]byte{PurposeAuthorize: 1, PurposeTopUp: 2, PurposeWallet: 3}

// purposePaths are the pages of the purposes.
var purposePaths = map[Purpose]string{PurposeAuthorize: "/connect", PurposeTopUp: "/topup", PurposeWallet: "/wallet"}

func purposeOf(code byte) (Purpose, bool) {
	for p, c := range purposeCodes {
		if c == code {
			return p, true
		}
	}
	return "", false
}

// MinLinkSecret is the shortest HMAC key Links accepts.
const MinLinkSecret = 32

// DefaultLinkTTL is the life of a token when Links.TTL is zero.
const DefaultLinkTTL = 30 * time.Minute

// Token layout, before base64url: version, purpose, expiry (Unix seconds, big-endian),
// length-prefixed paywall id and user id, then the HMAC-SHA256 of all that (domain-separated).
// Binary with length prefixes, so no id can be confused with another however it is spelled.
const (
	tokenVersion  = 1
	tokenHeader   = 1 + 1 + 8
	maxTokenChars = 1024
	macDomain     = "tollgate link token v1\x00"
)

// Links makes and checks the signed, short-lived tokens of hosted-page links.
type Links struct {
	BaseURL string        // the public URL of the hosted pages, e.g. https://pay.example.com
	Secret  []byte        // HMAC-SHA256 key, at least MinLinkSecret bytes
	TTL     time.Duration // how long a token stays valid (0: DefaultLinkTTL)
	Now     func() time.Time
}

// LinkClaims is what a valid token says.
type LinkClaims struct {
	PaywallID, UserID string
	Purpose           Purpose
	ExpiresAt         time.Time
}

// Check reports a configuration that cannot make safe links: a short secret (tokens would
// be forgeable, so Verify refuses every token), or a purpose-less base URL.
func (l Links) Check() error {
	if len(l.Secret) < MinLinkSecret {
		return fmt.Errorf("paywall: link secret is %d bytes; at least %d are needed", len(l.Secret), MinLinkSecret)
	}
	if l.BaseURL == "" {
		return fmt.Errorf("paywall: link base URL is empty")
	}
	return nil
}

func (l Links) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// URL returns the page link for a paywall's user: BaseURL + "/connect?t=…" (authorize),
// "/topup?t=…" or "/wallet?t=…". The token expires after TTL. An unknown purpose yields the
// wallet page's link with a token no page accepts.
func (l Links) URL(paywallID, userID string, p Purpose) string {
	base := l.BaseURL
	for len(base) > 0 && base[len(base)-1] == '/' {
		base = base[:len(base)-1]
	}
	path, ok := purposePaths[p]
	if !ok {
		path = purposePaths[PurposeWallet]
	}
	return base + path + "?t=" + l.Token(paywallID, userID, p)
}

// Token returns a signed token for a paywall's user and purpose (what URL puts after "t=").
func (l Links) Token(paywallID, userID string, p Purpose) string {
	ttl := l.TTL
	if ttl <= 0 {
		ttl = DefaultLinkTTL
	}
	// Ids longer than a length byte cannot be valid; truncating them yields a token whose
	// claims match no paywall or user rather than a panic.
	paywallID, userID = clip(paywallID), clip(userID)
	buf := make([]byte, 0, tokenHeader+2+len(paywallID)+len(userID)+sha256.Size)
	buf = append(buf, tokenVersion, purposeCodes[p])
	exp := max(l.now().Add(ttl).Unix(), 0) // a clock before 1970 makes an expired token
	buf = binary.BigEndian.AppendUint64(buf, uint64(exp))
	buf = append(buf, byte(len(paywallID))) //nolint:gosec // clip bounds it to 255
	buf = append(buf, paywallID...)
	buf = append(buf, byte(len(userID))) //nolint:gosec // clip bounds it to 255
	buf = append(buf, userID...)
	buf = append(buf, l.mac(buf)...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

func clip(s string) string {
	if len(s) > 255 {
		return s[:255]
	}
	return s
}

func (l Links) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, l.Secret)
	m.Write([]byte(macDomain))
	m.Write(payload)
	return m.Sum(nil)
}

// Verify checks a token for a purpose: signature (compared in constant time), purpose,
// expiry, shape.
// It can return: ErrBadToken (malformed, tampered with, signed with another secret, for
// another purpose, or a short secret configured), ErrExpiredToken (genuine but too old).
func (l Links) Verify(token string, p Purpose) (LinkClaims, error) {
	if len(l.Secret) < MinLinkSecret {
		return LinkClaims{}, fmt.Errorf("%w: the link secret is not configured", ErrBadToken)
	}
	if token == "" || len(token) > maxTokenChars {
		return LinkClaims{}, fmt.Errorf("%w: missing or oversized", ErrBadToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < tokenHeader+2+sha256.Size {
		return LinkClaims{}, fmt.Errorf("%w: not a link token", ErrBadToken)
	}
	payload, sig := raw[:len(raw)-sha256.Size], raw[len(raw)-sha256.Size:]
	if !hmac.Equal(sig, l.mac(payload)) {
		return LinkClaims{}, fmt.Errorf("%w: signature does not match", ErrBadToken)
	}
	c, err := parseClaims(payload)
	if err != nil {
		return LinkClaims{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	if c.Purpose != p {
		return LinkClaims{}, fmt.Errorf("%w: the link is for the %s page, not %s", ErrBadToken, c.Purpose, p)
	}
	if !l.now().Before(c.ExpiresAt) {
		return LinkClaims{}, fmt.Errorf("%w: expired at %s; ask the app for a new link", ErrExpiredToken, c.ExpiresAt.Format(time.RFC3339))
	}
	return c, nil
}

// parseClaims reads a signed payload. Only our own signed bytes reach it, but it checks every
// length anyway.
func parseClaims(b []byte) (LinkClaims, error) {
	if len(b) < tokenHeader+2 || b[0] != tokenVersion {
		return LinkClaims{}, fmt.Errorf("unknown token version")
	}
	p, ok := purposeOf(b[1])
	if !ok {
		return LinkClaims{}, fmt.Errorf("unknown purpose")
	}
	exp := binary.BigEndian.Uint64(b[2:10])
	if exp > 1<<40 { // far beyond any real expiry; keeps time.Unix sane
		return LinkClaims{}, fmt.Errorf("bad expiry")
	}
	rest := b[tokenHeader:]
	pw, rest, ok := lengthPrefixed(rest)
	if !ok {
		return LinkClaims{}, fmt.Errorf("bad paywall id")
	}
	user, rest, ok := lengthPrefixed(rest)
	if !ok || len(rest) != 0 {
		return LinkClaims{}, fmt.Errorf("bad user id")
	}
	return LinkClaims{PaywallID: string(pw), UserID: string(user), Purpose: p, ExpiresAt: time.Unix(int64(exp), 0).UTC()}, nil
}

func lengthPrefixed(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, false
	}
	n := int(b[0])
	return b[1 : 1+n], b[1+n:], true
}
