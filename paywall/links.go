package paywall

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
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

// LinkIDBytes is the size of a token's random id: 128 bits, so two tokens never share one
// and single-use state (a used connect link) can key on it.
const LinkIDBytes = 16

// Token layout, before base64url (unpadded, canonical):
//
//	version (2) | purpose | expiry (Unix seconds, big-endian uint64) | id (16 random bytes)
//	| paywall id | user id | HMAC-SHA256 (domain-separated) of everything before it
//
// An id field is a form byte then either 16 bytes (formUUID: a canonical lower-case UUID,
// which every stored paywall id is) or a length byte and the bytes (formBytes). Binary with
// explicit lengths, so no id can be confused with another however it is spelled; the UUID
// form keeps links short (a token for a 13-character user id is 120 characters).
const (
	tokenVersion  = 2
	tokenHeader   = 1 + 1 + 8 + LinkIDBytes
	maxTokenChars = 1024
	macDomain     = "tollgate link token v2\x00"

	formBytes = 0
	formUUID  = 1
)

// tokenEncoding refuses the other spellings of the same bytes (non-zero padding bits), so a
// token has exactly one text form.
var tokenEncoding = base64.RawURLEncoding.Strict()

// Links makes and checks the signed, short-lived tokens of hosted-page links.
type Links struct {
	BaseURL string        // the public URL of the hosted pages, e.g. https://pay.example.com
	Secret  []byte        // HMAC-SHA256 key, at least MinLinkSecret bytes
	TTL     time.Duration // how long a token stays valid (0: DefaultLinkTTL)
	Now     func() time.Time
}

// LinkClaims is what a valid token says.
type LinkClaims struct {
	// ID is the token's random id, 32 lower-case hex digits: unique per token, even for two
	// tokens made in the same second for the same paywall, user and purpose. Single-use state
	// keys on it, never on the token's text.
	ID                string
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

// Token returns a signed token for a paywall's user and purpose (what URL puts after "t="),
// with a fresh random id: no two calls return the same token.
func (l Links) Token(paywallID, userID string, p Purpose) string {
	var id [LinkIDBytes]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never returns an error; it crashes the program instead
	return l.token(id, paywallID, userID, p)
}

// token makes the token with a given id.
func (l Links) token(id [LinkIDBytes]byte, paywallID, userID string, p Purpose) string {
	ttl := l.TTL
	if ttl <= 0 {
		ttl = DefaultLinkTTL
	}
	buf := make([]byte, 0, tokenHeader+2*(2+255)+sha256.Size)
	buf = append(buf, tokenVersion, purposeCodes[p])
	exp := max(l.now().Add(ttl).Unix(), 0) // a clock before 1970 makes an expired token
	buf = binary.BigEndian.AppendUint64(buf, uint64(exp))
	buf = append(buf, id[:]...)
	buf = appendID(buf, paywallID)
	buf = appendID(buf, userID)
	buf = append(buf, l.mac(buf)...)
	return tokenEncoding.EncodeToString(buf)
}

// appendID appends an id field: a canonical UUID as 16 bytes, anything else length-prefixed.
// Ids longer than a length byte cannot be valid; truncating them yields a token whose claims
// match no paywall or user rather than a panic.
func appendID(buf []byte, s string) []byte {
	if u, ok := uuidBytes(s); ok {
		return append(append(buf, formUUID), u[:]...)
	}
	if len(s) > 255 {
		s = s[:255]
	}
	buf = append(buf, formBytes, byte(len(s))) //nolint:gosec // bounded to 255 just above
	return append(buf, s...)
}

// uuidBytes returns the 16 bytes of a canonical lower-case UUID (8-4-4-4-12 hex digits). Only
// that spelling is compacted, so uuidString gives back exactly the string that went in.
func uuidBytes(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	digits := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	for i := 0; i < len(digits); i++ {
		if c := digits[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return u, false
		}
	}
	if _, err := hex.Decode(u[:], []byte(digits)); err != nil {
		return u, false
	}
	return u, true
}

func uuidString(u []byte) string {
	h := hex.EncodeToString(u)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
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
// another purpose, of an older format, or a short secret configured), ErrExpiredToken
// (genuine but too old).
func (l Links) Verify(token string, p Purpose) (LinkClaims, error) {
	if len(l.Secret) < MinLinkSecret {
		return LinkClaims{}, fmt.Errorf("%w: the link secret is not configured", ErrBadToken)
	}
	if token == "" || len(token) > maxTokenChars {
		return LinkClaims{}, fmt.Errorf("%w: missing or oversized", ErrBadToken)
	}
	raw, err := tokenEncoding.DecodeString(token)
	if err != nil || len(raw) < tokenHeader+4+sha256.Size {
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
	if len(b) < tokenHeader || b[0] != tokenVersion {
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
	id := hex.EncodeToString(b[10:tokenHeader])
	rest := b[tokenHeader:]
	pw, rest, ok := idField(rest)
	if !ok {
		return LinkClaims{}, fmt.Errorf("bad paywall id")
	}
	user, rest, ok := idField(rest)
	if !ok || len(rest) != 0 {
		return LinkClaims{}, fmt.Errorf("bad user id")
	}
	return LinkClaims{ID: id, PaywallID: pw, UserID: user, Purpose: p, ExpiresAt: time.Unix(int64(exp), 0).UTC()}, nil
}

// idField reads what appendID wrote.
func idField(b []byte) (field string, rest []byte, ok bool) {
	if len(b) < 1 {
		return "", nil, false
	}
	switch b[0] {
	case formUUID:
		if len(b) < 1+16 {
			return "", nil, false
		}
		return uuidString(b[1:17]), b[17:], true
	case formBytes:
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return "", nil, false
		}
		n := int(b[1])
		return string(b[2 : 2+n]), b[2+n:], true
	}
	return "", nil, false
}
