package paywall

import (
	"encoding/base64"
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
		want := LinkClaims{PaywallID: testPaywallID, UserID: "acme:user_123", Purpose: tt.p, ExpiresAt: clock.t.Add(30 * time.Minute)}
		if err != nil || c != want {
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
	tests := map[string][]byte{
		"version":        append([]byte{9}, payload[1:]...),
		"purpose":        append([]byte{1, 7}, payload[2:]...),
		"expiry":         append(append([]byte{1, 3}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), payload[10:]...),
		"paywall length": append(append([]byte{}, payload[:10]...), 200),
		"trailing bytes": append(append([]byte{}, payload...), 'x'),
		"empty":          {},
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

// FuzzLinkToken: Verify never panics, never accepts what it did not sign, and parseClaims
// never panics on any payload.
func FuzzLinkToken(f *testing.F) {
	l := testLinks(&fakeClock{time.Unix(1_700_000_000, 0)})
	good := l.Token(testPaywallID, "acme:user_123", PurposeAuthorize)
	f.Add(good)
	f.Add("")
	f.Add("AQE")
	f.Add(good[:len(good)-2])
	f.Add(strings.Repeat("_", 300))
	f.Fuzz(func(t *testing.T, token string) {
		c, err := l.Verify(token, PurposeAuthorize)
		if err == nil && token != good {
			// Only a genuine token may pass; base64 has a few spellings of the same bytes.
			if c.PaywallID != testPaywallID || c.UserID != "acme:user_123" {
				t.Fatalf("accepted a forged token %q: %+v", token, c)
			}
		}
		if err != nil && !errors.Is(err, ErrBadToken) && !errors.Is(err, ErrExpiredToken) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if raw, err := base64.RawURLEncoding.DecodeString(token); err == nil {
			_, _ = parseClaims(raw)
		}
	})
}
