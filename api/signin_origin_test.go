package api

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/api/siwe"
	"github.com/tollgate-dev/tollgate/paywall"
)

// TestSignInOrigin: the domain of a sign-in message is the public URL's authority as a browser
// writes location.host: lower-case, no default port, IPv6 in brackets.
func TestSignInOrigin(t *testing.T) {
	for _, tt := range []struct{ public, domain, uri string }{
		{"https://pay.example.com", "pay.example.com", "https://pay.example.com/connect"},
		{"https://pay.example.com:443", "pay.example.com", "https://pay.example.com/connect"},
		{"https://Pay.Example.COM:443/", "pay.example.com", "https://pay.example.com/connect"},
		{"http://pay.example.com:80", "pay.example.com", "http://pay.example.com/connect"},
		{"https://pay.example.com:80", "pay.example.com:80", "https://pay.example.com:80/connect"},
		{"http://pay.example.com:443", "pay.example.com:443", "http://pay.example.com:443/connect"},
		{"https://pay.example.com:8443/tollgate/", "pay.example.com:8443", "https://pay.example.com:8443/tollgate/connect"},
		{"https://pay.example.com:", "pay.example.com", "https://pay.example.com/connect"},
		{"http://127.0.0.1:10000", "127.0.0.1:10000", "http://127.0.0.1:10000/connect"},
		{"http://[::1]:80", "[::1]", "http://[::1]/connect"},
		{"https://[2001:DB8::1]:8443", "[2001:db8::1]:8443", "https://[2001:db8::1]:8443/connect"},
		{"https://user@pay.example.com:443", "pay.example.com", "https://pay.example.com/connect"},
	} {
		t.Run(tt.public, func(t *testing.T) {
			u, err := url.Parse(tt.public)
			if err != nil {
				t.Fatal(err)
			}
			domain, origin := signInOrigin(u)
			uri := origin + strings.TrimRight(u.EscapedPath(), "/") + "/connect"
			if domain != tt.domain || uri != tt.uri {
				t.Errorf("domain %q, URI %q; want %q, %q", domain, uri, tt.domain, tt.uri)
			}
		})
	}
}

// TestConnectWithDefaultPortInPublicURL: with serve.public_url https://Pay.Example.test:443 the
// page asks the wallet to sign for "pay.example.test" (what the browser shows), the signature
// is accepted, and a message naming "pay.example.test:443" is not.
func TestConnectWithDefaultPortInPublicURL(t *testing.T) {
	e := newEnv(t, func(_ *Deps, o *Options) { o.PublicURL = "https://Pay.Example.test:443/" })
	pw, _ := e.newPaywall("Demo")
	wkey, wallet := newWallet(t)

	tok := e.links.Token(pw.ID, "alice", paywall.PurposeAuthorize)
	text := e.challenge(tok, wallet)
	m, err := siwe.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if m.Domain != "pay.example.test" || m.URI != "https://pay.example.test/connect" ||
		!strings.HasPrefix(text, "pay.example.test wants you to sign in with your Ethereum account:\n") {
		t.Fatalf("message domain %q, URI %q:\n%s", m.Domain, m.URI, text)
	}

	// The same message with the port written out, signed: refused.
	withPort := strings.Replace(text, "pay.example.test wants", "pay.example.test:443 wants", 1)
	r := e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": withPort, "signature": personalSign(t, wkey, withPort)})
	expectStatus(t, r, http.StatusBadRequest)
	if r.errorCode(t) != "sign_in_mismatch" {
		t.Errorf("message with the default port: %s", r.body)
	}

	r = e.page("POST", "/pages/v1/connect/verify", tok, map[string]any{"message": text, "signature": personalSign(t, wkey, text)})
	expectStatus(t, r, http.StatusOK)
	if a, err := e.store.Authorization(t.Context(), pw.ID, "alice"); err != nil || a.Wallet != wallet {
		t.Errorf("authorization %+v %v", a, err)
	}
}
