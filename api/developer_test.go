package api

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
)

// earn gives a paywall earnings the way users do: a user charged through the API.
func (e *env) earn(pw paywall.Paywall, key string, amount string) {
	e.t.Helper()
	_, wallet := e.authorize(pw, "payer")
	e.deposit(wallet, 200_000_000)
	r := e.app("POST", "/api/v1/users/payer/charges", key, map[string]any{"amount": amount}, "Idempotency-Key", "earn-"+amount)
	expectStatus(e.t, r, http.StatusCreated)
}

func TestEarnings(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	r := e.app("GET", "/api/v1/earnings", key, nil)
	expectStatus(t, r, 200)
	if m := r.json(t); m["available"] != "0.00" || m["paid_out"] != "0.00" || m["currency"] != "USDC" {
		t.Errorf("no earnings yet: %s", r.body)
	}
	e.earn(pw, key, "10")
	r = e.app("GET", "/api/v1/earnings", key, nil)
	if m := r.json(t); m["available"] != "9.90" || m["available_micro"] != 9_900_000.0 || m["in_flight"] != "0.00" {
		t.Errorf("earnings after a 10 USDC charge with a 1%% fee: %s", r.body)
	}
}

func TestPayouts(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	e.earn(pw, key, "100")

	r := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "20"}, "Idempotency-Key", "p-1")
	expectStatus(t, r, http.StatusCreated)
	p := r.json(t)
	if p["status"] != "requested" || p["amount"] != "20.00" || p["to"] != pw.PayoutAddress || p["chain_id"] != "1337" {
		t.Fatalf("payout: %s", r.body)
	}
	again := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "20.0"}, "Idempotency-Key", "p-1")
	if again.status != http.StatusCreated || !bytes.Equal(again.body, r.body) {
		t.Errorf("replay: %d %s", again.status, again.body)
	}
	if c := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "21"}, "Idempotency-Key", "p-1"); c.status != http.StatusConflict {
		t.Errorf("same key, other amount: %d %s", c.status, c.body)
	}

	r = e.app("GET", "/api/v1/earnings", key, nil)
	if m := r.json(t); m["available"] != "79.00" || m["in_flight"] != "20.00" {
		t.Errorf("earnings after the request: %s", r.body)
	}
	id := p["id"].(string)
	r = e.app("GET", "/api/v1/payouts/"+id, key, nil)
	expectStatus(t, r, 200)
	if _, err := e.ledger.SettlePayout(t.Context(), id, "0xabc"); err != nil {
		t.Fatal(err)
	}
	r = e.app("GET", "/api/v1/payouts/"+id, key, nil)
	if m := r.json(t); m["status"] != "settled" || m["tx_hash"] != "0xabc" {
		t.Errorf("settled payout: %s", r.body)
	}
	r = e.app("GET", "/api/v1/payouts", key, nil)
	if ps := r.json(t)["payouts"].([]any); len(ps) != 1 {
		t.Errorf("list: %s", r.body)
	}
	r = e.app("GET", "/api/v1/earnings", key, nil)
	if m := r.json(t); m["paid_out"] != "20.00" || m["in_flight"] != "0.00" {
		t.Errorf("earnings after settlement: %s", r.body)
	}

	// Another paywall sees neither the payout nor its list.
	_, other := e.newPaywall("Other")
	if r := e.app("GET", "/api/v1/payouts/"+id, other, nil); r.status != http.StatusNotFound {
		t.Errorf("other paywall reads the payout: %d %s", r.status, r.body)
	}
	if r := e.app("GET", "/api/v1/payouts", other, nil); strings.Contains(string(r.body), id) {
		t.Errorf("other paywall lists the payout: %s", r.body)
	}
	if r := e.app("GET", "/api/v1/payouts/not-a-uuid", key, nil); r.status != http.StatusNotFound {
		t.Errorf("malformed id: %d", r.status)
	}
}

func TestPayoutLimits(t *testing.T) {
	e := newEnv(t) // min 1, max 50, 60 per 24 hours
	pw, key := e.newPaywall("Demo")
	e.earn(pw, key, "100")
	tests := []struct {
		name   string
		amount string
		status int
		code   string
	}{
		{"below the minimum", "0.99", 400, "amount_too_small"},
		{"above the maximum", "50.000001", 400, "amount_too_large"},
		{"seven places", "1.0000001", 400, "invalid_amount"},
		{"first", "40", 201, ""},
		{"beyond the daily cap", "20.01", 429, "payout_limit"},
		{"up to the daily cap", "20", 201, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": tt.amount}, "Idempotency-Key", "lim-"+string(rune('a'+i)))
			expectStatus(t, r, tt.status)
			if tt.code != "" && r.errorCode(t) != tt.code {
				t.Errorf("code %q, want %q", r.errorCode(t), tt.code)
			}
		})
	}
	// A failed payout gives its share of the cap back.
	ps, err := e.ledger.Payouts(t.Context(), pw.ID, ledger.PayoutRequested, 10)
	if err != nil || len(ps) != 2 {
		t.Fatalf("payouts %v %v", ps, err)
	}
	if _, err := e.ledger.FailPayout(t.Context(), ps[0].ID, "test"); err != nil {
		t.Fatal(err)
	}
	r := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "10"}, "Idempotency-Key", "lim-after-fail")
	expectStatus(t, r, http.StatusCreated)
}

func TestPayoutRefusals(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	e.earn(pw, key, "5")
	r := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "10"}, "Idempotency-Key", "x")
	expectStatus(t, r, http.StatusConflict)
	if r.errorCode(t) != "insufficient_earnings" || !strings.Contains(string(r.body), "4.95") {
		t.Errorf("insufficient earnings: %s", r.body)
	}
	r = e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "1"})
	expectStatus(t, r, http.StatusBadRequest)

	noAddr, noAddrKey, err := e.store.Create(t.Context(), paywall.Paywall{
		Name: "No address", Owner: "o", Mode: paywall.ModeBYOK, Upstream: "u", UpstreamKey: "k",
	})
	if err != nil {
		t.Fatal(err)
	}
	e.earn(noAddr, noAddrKey, "5")
	r = e.app("POST", "/api/v1/payouts", noAddrKey, map[string]any{"amount": "1"}, "Idempotency-Key", "y")
	expectStatus(t, r, http.StatusConflict)
	if r.errorCode(t) != "no_payout_address" {
		t.Errorf("code %q", r.errorCode(t))
	}
}
