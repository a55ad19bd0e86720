package paywall

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

// fakeClock is a settable clock for token expiry.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func testLinks(clock *fakeClock) Links {
	return Links{BaseURL: "https://pay.example.com/", Secret: []byte("0123456789abcdef0123456789abcdef"), TTL: 30 * time.Minute, Now: clock.Now}
}

const testPaywallID = "0b3c9c3e-8f47-4f43-9a4c-0e6f5c1d2a01"

func tokenOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("t")
}

func TestLinksRoundTrip(t *testing.T) {
	clock := &fakeClock{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	l := testLinks(clock)
	for _, tt := range []struct {
		p    Purpose
		path string
	}{{PurposeAuthorize, "/connect"}, {PurposeTopUp, "/topup"}, {PurposeWallet, "/wallet"}} {
		link := l.URL(testPaywallID, "acme:user_123", tt.p)
		if !strings.HasPrefix(link, "https://pay.example.com"+tt.path+"?t=") {
			t.Errorf("URL(%s) = %s", tt.p, link)
		}
		c, err := l.Verify(tokenOf(t, link), tt.p)
		want := LinkClaims{ID: c.ID, PaywallID: testPaywallID, UserID: "acme:user_123", Purpose: tt.p, ExpiresAt: clock.t.Add(30 * time.Minute)}
		if err != nil || c != want || !isLinkID(c.ID) {
			t.Errorf("Verify = %+v, %v; want %+v", c, err, want)
		}
	}
	// The default TTL applies when none is set.
	l.TTL = 0
	c, err := l.Verify(l.Token(testPaywallID, "u", PurposeWallet), PurposeWallet)
	if err != nil || !c.ExpiresAt.Equal(clock.t.Add(DefaultLinkTTL)) {
		t.Errorf("default TTL: %+v, %v", c, err)
	}
}

func TestLinksRefused(t *testing.T) {
	clock := &fakeClock{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	l := testLinks(clock)
	good := l.Token(testPaywallID, "u1", PurposeTopUp)
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		return base64.RawURLEncoding.EncodeToString(b)
	}
	other := l
	other.Secret = []byte("another secret, 32 bytes long!!!")
	short := l
	short.Secret = []byte("short")

	tests := []struct {
		name    string
		links   Links
		token   string
		purpose Purpose
		advance time.Duration
		want    error
		msg     string
	}{
		{"wrong purpose", l, good, PurposeAuthorize, 0, ErrBadToken, "for the topup page, not authorize"},
		{"expired", l, good, PurposeTopUp, 30 * time.Minute, ErrExpiredToken, "expired at 2026-03-01T12:30:00Z"},
		{"long expired", l, good, PurposeTopUp, 48 * time.Hour, ErrExpiredToken, "ask the app for a new link"},
		{"tampered expiry", l, flip(5), PurposeTopUp, 0, ErrBadToken, "signature does not match"},
		{"tampered user", l, flip(len(raw) - 33), PurposeTopUp, 0, ErrBadToken, "signature does not match"},
		{"tampered signature", l, flip(len(raw) - 1), PurposeTopUp, 0, ErrBadToken, "signature does not match"},
		{"signed with another secret", other, good, PurposeTopUp, 0, ErrBadToken, "signature does not match"},
		{"short secret refuses everything", short, short.Token(testPaywallID, "u1", PurposeTopUp), PurposeTopUp, 0, ErrBadToken, "not configured"},
		{"empty", l, "", PurposeTopUp, 0, ErrBadToken, "missing"},
		{"oversized", l, strings.Repeat("A", 2000), PurposeTopUp, 0, ErrBadToken, "oversized"},
		{"not base64", l, "!!!!", PurposeTopUp, 0, ErrBadToken, "not a link token"},
		{"padded base64", l, good + "==", PurposeTopUp, 0, ErrBadToken, "not a link token"},
		{"too short", l, base64.RawURLEncoding.EncodeToString(raw[:20]), PurposeTopUp, 0, ErrBadToken, "not a link token"},
		{"another spelling of the same bytes", l, respell(t, good), PurposeTopUp, 0, ErrBadToken, "not a link token"},
		{"truncated", l, base64.RawURLEncoding.EncodeToString(raw[:len(raw)-1]), PurposeTopUp, 0, ErrBadToken, "signature does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *clock
			c.t = c.t.Add(tt.advance)
			links := tt.links
			links.Now = c.Now
			claims, err := links.Verify(tt.token, tt.purpose)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) || claims != (LinkClaims{}) {
				t.Errorf("Verify = %+v, %v; want %v saying %q", claims, err, tt.want, tt.msg)
			}
		})
	}
	// One second before expiry it still works.
	c := *clock
	c.t = c.t.Add(30*time.Minute - time.Second)
	l.Now = c.Now
	if _, err := l.Verify(good, PurposeTopUp); err != nil {
		t.Errorf("a token one second before expiry: %v", err)
	}
}

// TestLinksPayloadIsUnambiguous: a correctly signed payload with bad inner structure is
// refused by the parser (a defence in depth: only our own signatures reach it).
func TestParseClaimsRefusesMalformed(t *testing.T) {
	l := testLinks(&fakeClock{time.Unix(1_700_000_000, 0)})
	valid, _ := base64.RawURLEncoding.DecodeString(l.Token(testPaywallID, "u", PurposeWallet))
	payload := valid[:len(valid)-32]
	header := payload[:tokenHeader]
	with := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	tests := map[string][]byte{
		"version":         with([]byte{9}, payload[1:]),
		"version 1 (old)": with([]byte{1}, payload[1:]),
		"purpose":         with([]byte{tokenVersion, 7}, payload[2:]),
		"expiry":          with([]byte{tokenVersion, 3}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, payload[10:]),
		"short id":        payload[:tokenHeader-1],
		"no paywall":      header,
		"paywall form":    with(header, []byte{7, 1, 'p'}),
		"paywall length":  with(header, []byte{formBytes, 200}),
		"truncated uuid":  with(header, []byte{formUUID, 1, 2, 3}),
		"no user":         with(header, []byte{formBytes, 1, 'p'}),
		"user length":     with(header, []byte{formBytes, 1, 'p', formBytes, 2, 'u'}),
		"trailing bytes":  with(payload, []byte{'x'}),
		"empty":           {},
	}
	for name, p := range tests {
		if _, err := parseClaims(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
		// And signed, through Verify.
		signed := base64.RawURLEncoding.EncodeToString(append(append([]byte{}, p...), l.mac(p)...))
		if _, err := l.Verify(signed, PurposeWallet); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: Verify = %v", name, err)
		}
	}
	if err := l.Check(); err != nil {
		t.Errorf("Check = %v", err)
	}
	if err := (Links{BaseURL: "x", Secret: []byte("short")}).Check(); err == nil {
		t.Error("Check accepted a short secret")
	}
}

// TestLinkTokensAreUnique: tokens made in the same second for the same paywall, user and
// purpose differ and carry different ids, so using one (a connect link) uses up no other.
func TestLinkTokensAreUnique(t *testing.T) {
	l := testLinks(&fakeClock{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}) // a frozen clock
	const n = 1000
	tokens, ids := map[string]bool{}, map[string]bool{}
	for range n {
		tok := l.Token(testPaywallID, "alice", PurposeAuthorize)
		c, err := l.Verify(tok, PurposeAuthorize)
		if err != nil {
			t.Fatal(err)
		}
		if !isLinkID(c.ID) {
			t.Fatalf("id %q is not %d hex digits", c.ID, 2*LinkIDBytes)
		}
		tokens[tok], ids[c.ID] = true, true
	}
	if len(tokens) != n || len(ids) != n {
		t.Errorf("%d tokens made in one second: %d distinct tokens, %d distinct ids", n, len(tokens), len(ids))
	}
}

// TestLinkTokenIDs: a canonical UUID travels as 16 bytes and comes back exactly; any other
// spelling (upper case, not a UUID, empty, too long) travels as bytes and comes back exactly
// (clipped at 255). Every token is URL-safe and short.
func TestLinkTokenIDs(t *testing.T) {
	l := testLinks(&fakeClock{time.Unix(1_700_000_000, 0)})
	for _, tt := range []struct{ paywall, user, wantPaywall, wantUser string }{
		{testPaywallID, "acme:user_123", testPaywallID, "acme:user_123"},
		{strings.ToUpper(testPaywallID), "u", strings.ToUpper(testPaywallID), "u"},
		{"0b3c9c3e-8f47-4f43-9a4c-0e6f5c1d2a0g", "u", "0b3c9c3e-8f47-4f43-9a4c-0e6f5c1d2a0g", "u"},
		{"0b3c9c3e8f474f439a4c0e6f5c1d2a01", "u", "0b3c9c3e8f474f439a4c0e6f5c1d2a01", "u"},
		{"p1", testPaywallID, "p1", testPaywallID},
		{"", "", "", ""},
		{"p", strings.Repeat("x", 300), "p", strings.Repeat("x", 255)},
	} {
		tok := l.Token(tt.paywall, tt.user, PurposeTopUp)
		c, err := l.Verify(tok, PurposeTopUp)
		if err != nil || c.PaywallID != tt.wantPaywall || c.UserID != tt.wantUser {
			t.Errorf("Token(%q, %q): %+v, %v", tt.paywall, tt.user, c, err)
		}
		if strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Errorf("token %q is not URL-safe", tok)
		}
	}
	// A stored paywall id (a UUID) and a typical user id: 90 bytes, 120 characters.
	if tok := l.Token(testPaywallID, "acme:user_123", PurposeAuthorize); len(tok) != 120 {
		t.Errorf("token is %d characters, want 120: %s", len(tok), tok)
	}
}

// isLinkID reports whether id looks like a LinkClaims.ID.
func isLinkID(id string) bool {
	_, err := hex.DecodeString(id)
	return err == nil && len(id) == 2*LinkIDBytes && id == strings.ToLower(id)
}

// respell returns another base64url spelling of the same bytes (the unused low bits of the
// last character set), which a lenient decoder would accept as the same token.
func respell(t *testing.T, tok string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(tok)%4 == 0 || len(tok)%4 == 1 {
		t.Fatalf("token length %d has no unused bits", len(tok))
	}
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	other := tok[:len(tok)-1] + string(alphabet[last|1])
	if last|1 == last {
		other = tok[:len(tok)-1] + string(alphabet[last&^1])
	}
	a, errA := base64.RawURLEncoding.DecodeString(tok)
	b, errB := base64.RawURLEncoding.DecodeString(other)
	if errA != nil || errB != nil || string(a) != string(b) || other == tok {
		t.Fatalf("respell(%q) = %q is not another spelling of the same bytes", tok, other)
	}
	return other
}

// FuzzLinkToken: Verify never panics, accepts no token but the one it signed (one spelling
// only), and parseClaims never panics on any payload.
func FuzzLinkToken(f *testing.F) {
	l := testLinks(&fakeClock{time.Unix(1_700_000_000, 0)})
	// Fixed ids: every fuzzing worker process must make the same tokens.
	good := l.token([LinkIDBytes]byte{1, 2, 3}, testPaywallID, "acme:user_123", PurposeAuthorize)
	short := l.token([LinkIDBytes]byte{4, 5, 6}, "p1", "u", PurposeAuthorize)
	f.Add(good)
	f.Add(short)
	f.Add(l.token([LinkIDBytes]byte{7}, testPaywallID, "acme:user_123", PurposeTopUp))
	f.Add("")
	f.Add("AgE")
	f.Add(good[:len(good)-2])
	f.Add(strings.Repeat("_", 300))
	f.Fuzz(func(t *testing.T, token string) {
		c, err := l.Verify(token, PurposeAuthorize)
		if err == nil && token != good && token != short {
			t.Fatalf("accepted a token it did not make %q: %+v", token, c)
		}
		if err != nil && !errors.Is(err, ErrBadToken) && !errors.Is(err, ErrExpiredToken) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if raw, err := base64.RawURLEncoding.DecodeString(token); err == nil {
			_, _ = parseClaims(raw)
		}
	})
}
