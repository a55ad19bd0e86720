package api

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	_, key := e.newPaywall("Demo")
	tests := []struct {
		name    string
		headers map[string]string
		code    string
	}{
		{"no key", nil, "missing_api_key"},
		{"not bearer", map[string]string{"Authorization": "Basic " + key}, "missing_api_key"},
		{"unknown key", map[string]string{"Authorization": "Bearer tg_" + strings.Repeat("A", 43)}, "invalid_api_key"},
		{"garbage", map[string]string{"Authorization": "Bearer nope"}, "invalid_api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.call("GET", "/api/v1/users/alice/balance", tt.headers, nil)
			expectStatus(t, r, http.StatusUnauthorized)
			if got := r.errorCode(t); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
		})
	}
	// A rotated key stops working at once.
	pw, key2 := e.newPaywall("Other")
	if _, err := e.store.RotateKey(t.Context(), pw.ID); err != nil {
		t.Fatal(err)
	}
	if r := e.app("GET", "/api/v1/earnings", key2, nil); r.status != http.StatusUnauthorized {
		t.Errorf("rotated key: status %d", r.status)
	}
}

func TestUserFromPathOrHeader(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	_, wallet := e.authorize(pw, "acme:user_1")
	tests := []struct {
		name    string
		path    string
		headers []string
		status  int
		code    string
	}{
		{"path", "/api/v1/users/acme:user_1/authorization", nil, 200, ""},
		{"header", "/api/v1/user/authorization", []string{"X-Paywall-User", "acme:user_1"}, 200, ""},
		{"both agree", "/api/v1/users/acme:user_1/authorization", []string{"X-Paywall-User", "acme:user_1"}, 200, ""},
		{"both differ", "/api/v1/users/acme:user_1/authorization", []string{"X-Paywall-User", "bob"}, 400, "user_mismatch"},
		{"header missing", "/api/v1/user/authorization", nil, 400, "missing_user"},
		{"bad user", "/api/v1/user/authorization", []string{"X-Paywall-User", "has space"}, 400, "invalid_user"},
		{"too long", "/api/v1/users/" + strings.Repeat("a", 129) + "/authorization", nil, 400, "invalid_user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.app("GET", tt.path, key, nil, tt.headers...)
			expectStatus(t, r, tt.status)
			if tt.status == 200 {
				if m := r.json(t); m["authorized"] != true || m["wallet"] != wallet {
					t.Errorf("answer %s", r.body)
				}
				return
			}
			if got := r.errorCode(t); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
		})
	}
}

func TestAuthorizationStatusAndRevoke(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo App")

	r := e.app("GET", "/api/v1/users/alice/authorization", key, nil)
	expectStatus(t, r, 200)
	m := r.json(t)
	link, _ := m["link"].(string)
	if m["authorized"] != false || !strings.HasPrefix(link, e.url+"/connect?t=") {
		t.Fatalf("not authorized answer: %s", r.body)
	}
	if msg, _ := m["message"].(string); !strings.Contains(msg, link) || !strings.Contains(msg, "Demo App") {
		t.Errorf("message %q lacks the link or the paywall name", msg)
	}
	// The link is for this paywall, this user, the connect page.
	c, err := e.links.Verify(strings.TrimPrefix(link, e.url+"/connect?t="), "authorize")
	if err != nil || c.PaywallID != pw.ID || c.UserID != "alice" {
		t.Errorf("link claims %+v, %v", c, err)
	}

	_, wallet := e.authorize(pw, "alice")
	r = e.app("GET", "/api/v1/users/alice/authorization", key, nil)
	if m := r.json(t); m["authorized"] != true || m["wallet"] != wallet || m["authorized_at"] == nil {
		t.Errorf("authorized answer: %s", r.body)
	}

	r = e.app("DELETE", "/api/v1/users/alice/authorization", key, nil)
	expectStatus(t, r, 200)
	if m := r.json(t); m["revoked"] != true || m["authorized"] != false {
		t.Errorf("revoke answer: %s", r.body)
	}
	r = e.app("GET", "/api/v1/users/alice/authorization", key, nil)
	if m := r.json(t); m["authorized"] != false {
		t.Errorf("still authorized after revoke: %s", r.body)
	}
	// Revoking again is harmless.
	r = e.app("DELETE", "/api/v1/user/authorization", key, nil, "X-Paywall-User", "alice")
	expectStatus(t, r, 200)
	if m := r.json(t); m["revoked"] != false {
		t.Errorf("second revoke answer: %s", r.body)
	}
}

func TestBalance(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")

	// Not authorized: 403 with the paywall's message and the connect link.
	r := e.app("GET", "/api/v1/users/alice/balance", key, nil)
	expectStatus(t, r, http.StatusForbidden)
	m := r.json(t)
	if m["action"] != "authorize" || !strings.Contains(m["link"].(string), "/connect?t=") {
		t.Errorf("answer %s", r.body)
	}

	_, wallet := e.authorize(pw, "alice")
	r = e.app("GET", "/api/v1/users/alice/balance", key, nil)
	expectStatus(t, r, 200)
	if m := r.json(t); m["available"] != "0.00" || m["available_micro"] != 0.0 || m["currency"] != "USDC" || m["wallet"] != wallet {
		t.Errorf("empty wallet: %s", r.body)
	}

	e.deposit(wallet, 12_345_678)
	r = e.app("GET", "/api/v1/user/balance", key, nil, "X-Paywall-User", "alice")
	m = r.json(t)
	if m["available"] != "12.345678" || m["available_micro"] != 12345678.0 || m["posted"] != "12.345678" || m["held"] != "0.00" {
		t.Errorf("balance: %s", r.body)
	}
}

func TestTopUpLinkAndMenu(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")

	r := e.app("GET", "/api/v1/users/bob/topup-link", key, nil)
	expectStatus(t, r, http.StatusForbidden)

	r = e.app("GET", "/api/v1/users/bob/menu", key, nil)
	expectStatus(t, r, 200)
	items := r.json(t)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["id"] != "connect" {
		t.Errorf("menu of a user who did not authorize: %s", r.body)
	}

	_, wallet := e.authorize(pw, "bob")
	e.deposit(wallet, 1_500_000)
	r = e.app("GET", "/api/v1/users/bob/topup-link", key, nil)
	expectStatus(t, r, 200)
	url, _ := r.json(t)["url"].(string)
	c, err := e.links.Verify(strings.TrimPrefix(url, e.url+"/topup?t="), "topup")
	if err != nil || c.PaywallID != pw.ID || c.UserID != "bob" {
		t.Errorf("top-up link %q: %+v %v", url, c, err)
	}

	r = e.app("GET", "/api/v1/users/bob/menu", key, nil)
	expectStatus(t, r, 200)
	var ids []string
	for _, it := range r.json(t)["items"].([]any) {
		item := it.(map[string]any)
		ids = append(ids, item["id"].(string))
		if item["id"] == "balance" && item["label"] != "Balance: 1.50 USDC" {
			t.Errorf("balance label %q", item["label"])
		}
	}
	if strings.Join(ids, ",") != "balance,topup,history,disconnect" {
		t.Errorf("menu items %v", ids)
	}
}

func TestHistoryShowsOnlyThisPaywallsCharges(t *testing.T) {
	e := newEnv(t)
	pwA, keyA := e.newPaywall("A")
	pwB, keyB := e.newPaywall("B")
	_, wallet := e.authorize(pwA, "alice")
	// The same person connects the same wallet to B.
	if _, err := e.store.Authorize(t.Context(), pwB.ID, "alice-at-b", wallet); err != nil {
		t.Fatal(err)
	}
	e.deposit(wallet, 10_000_000)
	charge := func(apiKey, user, idem, amount string) {
		t.Helper()
		r := e.app("POST", "/api/v1/users/"+user+"/charges", apiKey, map[string]any{"amount": amount, "description": "for " + user}, "Idempotency-Key", idem)
		expectStatus(t, r, http.StatusCreated)
	}
	charge(keyA, "alice", "a-1", "1")
	charge(keyB, "alice-at-b", "b-1", "2")
	// A chat completion through B, captured as the request path does (metadata paywall=B).
	hold, err := e.ledger.Hold(t.Context(), ledger.HoldRequest{Key: "h-1", Wallet: wallet, AmountMicro: 500_000, Paywall: pwB.ID, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Capture(t.Context(), ledger.CaptureRequest{Key: "c-1", HoldID: hold.ID,
		Split: ledger.Split{FeeMicro: 3_000, DeveloperMicro: 297_000}, Metadata: map[string]string{"paywall": pwB.ID, "model": "m"}}); err != nil {
		t.Fatal(err)
	}

	r := e.app("GET", "/api/v1/users/alice/history", keyA, nil)
	expectStatus(t, r, 200)
	var kinds []string
	for _, it := range r.json(t)["items"].([]any) {
		item := it.(map[string]any)
		kinds = append(kinds, item["kind"].(string)+":"+item["amount"].(string))
	}
	if strings.Join(kinds, ",") != "charge:-1.00,deposit:10.00" {
		t.Errorf("A sees %v, want its charge and the deposit only", kinds)
	}
	r = e.app("GET", "/api/v1/users/alice-at-b/history?limit=1", keyB, nil)
	m := r.json(t)
	if items := m["items"].([]any); len(items) != 1 || items[0].(map[string]any)["kind"] != "capture" ||
		items[0].(map[string]any)["amount"] != "-0.30" || m["next"] == "" {
		t.Errorf("B's first page (its chat capture): %s", r.body)
	}
	r = e.app("GET", "/api/v1/users/alice-at-b/history?cursor="+m["next"].(string), keyB, nil)
	expectStatus(t, r, 200)

	for _, bad := range []string{"limit=0", "limit=201", "limit=x", "cursor=not-a-cursor"} {
		r := e.app("GET", "/api/v1/users/alice/history?"+bad, keyA, nil)
		expectStatus(t, r, http.StatusBadRequest)
	}
}

// TestPaywallIsolation: one paywall can never read or change another paywall's users, even
// when it names them exactly.
func TestPaywallIsolation(t *testing.T) {
	e := newEnv(t)
	pwA, _ := e.newPaywall("A")
	_, keyB := e.newPaywall("B")
	_, wallet := e.authorize(pwA, "alice")
	e.deposit(wallet, 5_000_000)

	// To B, alice is a user who never authorized it.
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/api/v1/users/alice/authorization", http.StatusOK},
		{"GET", "/api/v1/users/alice/balance", http.StatusForbidden},
		{"GET", "/api/v1/users/alice/topup-link", http.StatusForbidden},
		{"GET", "/api/v1/users/alice/menu", http.StatusOK},
		{"GET", "/api/v1/users/alice/history", http.StatusForbidden},
	} {
		r := e.app(tt.method, tt.path, keyB, nil)
		if r.status != tt.status {
			t.Errorf("B's %s %s: %d, want %d: %s", tt.method, tt.path, r.status, tt.status, r.body)
		}
		if strings.Contains(string(r.body), wallet) || strings.Contains(string(r.body), "5.00") {
			t.Errorf("B's %s %s shows A's user: %s", tt.method, tt.path, r.body)
		}
		if r.status == 200 && strings.HasSuffix(tt.path, "authorization") && r.json(t)["authorized"] != false {
			t.Errorf("B sees A's user as authorized: %s", r.body)
		}
	}
	// B cannot charge A's user, nor revoke A's authorization.
	r := e.app("POST", "/api/v1/users/alice/charges", keyB, map[string]any{"amount": "1"}, "Idempotency-Key", "x")
	expectStatus(t, r, http.StatusForbidden)
	e.app("DELETE", "/api/v1/users/alice/authorization", keyB, nil)
	if _, err := e.store.Authorization(t.Context(), pwA.ID, "alice"); err != nil {
		t.Errorf("B's revoke touched A's authorization: %v", err)
	}
	b, err := e.ledger.Balance(t.Context(), wallet)
	if err != nil || b.AvailableMicro != 5_000_000 {
		t.Errorf("balance after B's attempts: %+v %v", b, err)
	}
}
