package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
	"github.com/tollgate-dev/tollgate/paywall"
)

// charge makes a manual charge through the API and returns its id.
func (e *env) charge(apiKey, user, amount, idem string) string {
	e.t.Helper()
	r := e.app("POST", "/api/v1/users/"+user+"/charges", apiKey, map[string]any{"amount": amount}, "Idempotency-Key", idem)
	expectStatus(e.t, r, http.StatusCreated)
	return r.json(e.t)["id"].(string)
}

// capture posts a request's capture as the extproc does: a hold on the wallet, captured with
// split and the paywall and user in its metadata.
func (e *env) capture(pw paywall.Paywall, user, wallet string, split ledger.Split) string {
	e.t.Helper()
	ctx := e.t.Context()
	key := "req-" + time.Now().Format("150405.000000000")
	h, err := e.ledger.Hold(ctx, ledger.HoldRequest{Key: key, Wallet: wallet, AmountMicro: split.TotalMicro(), Paywall: pw.ID, TTL: time.Minute})
	if err != nil {
		e.t.Fatalf("hold: %v", err)
	}
	res, err := e.ledger.Capture(ctx, ledger.CaptureRequest{Key: "tg:capture:" + key, HoldID: h.ID, Split: split,
		Metadata: map[string]string{ledger.MetaPaywall: pw.ID, ledger.MetaUser: user, "model": "m"}})
	if err != nil {
		e.t.Fatalf("capture: %v", err)
	}
	return res.Transfer.ID
}

// charged is an API with one paywall whose user alice was charged once.
type charged struct {
	*env
	pw                    paywall.Paywall
	key, wallet, chargeID string
}

// newCharged deposits depositMicro into alice's wallet and charges her amount (USDC).
func newCharged(t *testing.T, depositMicro int64, amount string) charged {
	t.Helper()
	c := charged{env: newEnv(t)}
	c.pw, c.key = c.newPaywall("Demo")
	_, c.wallet = c.authorize(c.pw, "alice")
	c.deposit(c.wallet, depositMicro)
	c.chargeID = c.charge(c.key, "alice", amount, "c")
	return c
}

// refund asks for a refund of a charge as the paywall with apiKey.
func (e *env) refund(apiKey, user, chargeID, idem string, body any) reply {
	e.t.Helper()
	return e.app("POST", "/api/v1/users/"+user+"/charges/"+chargeID+"/refund", apiKey, body, "Idempotency-Key", idem)
}

// money is what the ledger holds where a refund moves money.
type money struct{ wallet, earnings, fees, provider int64 }

func (e *env) money(wallet, paywallID string) money {
	e.t.Helper()
	var m money
	err := e.db.Pool.QueryRow(e.t.Context(), `SELECT
		(SELECT COALESCE(SUM(posted), 0)::BIGINT FROM ledger_balances WHERE kind = 'wallet' AND ref = $1),
		(SELECT COALESCE(SUM(posted), 0)::BIGINT FROM ledger_balances WHERE kind = 'earnings' AND ref = $2),
		(SELECT COALESCE(SUM(posted), 0)::BIGINT FROM ledger_balances WHERE kind = 'platform_fees'),
		(SELECT COALESCE(SUM(posted), 0)::BIGINT FROM ledger_balances WHERE kind = 'provider_costs')`,
		wallet, paywallID).Scan(&m.wallet, &m.earnings, &m.fees, &m.provider)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *env) wantMoney(wallet, paywallID string, want money) {
	e.t.Helper()
	if got := e.money(wallet, paywallID); got != want {
		e.t.Errorf("money %+v, want %+v", got, want)
	}
}

// checkLedger fails the test on any violated ledger invariant.
func (e *env) checkLedger() {
	e.t.Helper()
	v, err := ledgercheck.Check(e.t.Context(), e.db.Pool)
	if err != nil {
		e.t.Fatalf("ledger checker: %v", err)
	}
	for _, s := range v {
		e.t.Errorf("ledger invariant violated: %s", s)
	}
}

// TestRefundCharge: a refund gives the wallet the whole charge back and takes the earnings' and
// the fee's shares; it shows in the user's history; the same key replays it, on either route
// form; the same key for another charge is 409; a second refund with a new key is 409 naming
// the first; a retry after the stored answer is gone finds the ledger's refund.
func TestRefundCharge(t *testing.T) {
	e := newCharged(t, 10_000_000, "1.5")
	pw, key, wallet, id := e.pw, e.key, e.wallet, e.chargeID
	other := e.charge(key, "alice", "0.5", "c-2")
	e.wantMoney(wallet, pw.ID, money{wallet: 8_000_000, earnings: 1_980_000, fees: 20_000})

	first := e.refund(key, "alice", id, "r-1", map[string]any{"reason": "the report failed"})
	expectStatus(t, first, http.StatusCreated)
	m := first.json(t)
	if m["success"] != true || m["refunded"] != id || m["user"] != "alice" || m["wallet"] != wallet ||
		m["amount"] != "1.50" || m["amount_micro"] != 1_500_000.0 || m["currency"] != "USDC" || m["reason"] != "the report failed" {
		t.Fatalf("refund answer: %s", first.body)
	}
	refundID := m["id"].(string)
	e.wantMoney(wallet, pw.ID, money{wallet: 9_500_000, earnings: 495_000, fees: 5_000})

	t.Run("history", func(t *testing.T) {
		r := e.app("GET", "/api/v1/users/alice/history", key, nil)
		expectStatus(t, r, http.StatusOK)
		var h historyJSON
		if err := json.Unmarshal(r.body, &h); err != nil {
			t.Fatal(err)
		}
		if len(h.Items) != 4 || h.Items[0].ID != refundID || h.Items[0].Kind != "reversal" || h.Items[0].AmountMicro != 1_500_000 ||
			h.Items[0].Metadata["reason"] != "the report failed" || h.Items[0].Metadata["paywall"] != pw.ID || h.Items[0].Metadata["user"] != "alice" {
			t.Errorf("history: %s", r.body)
		}
		// The paywall's earnings show it too.
		page, err := e.ledger.History(t.Context(), ledger.Earnings(pw.ID), "", 1)
		if err != nil || len(page.Items) != 1 || page.Items[0].TransferID != refundID || page.Items[0].AmountMicro != -1_485_000 {
			t.Errorf("earnings history %+v, %v", page, err)
		}
	})
	t.Run("replay", func(t *testing.T) {
		again := e.app("POST", "/api/v1/user/charges/"+strings.ToUpper(id)+"/refund", key, map[string]any{"reason": "the report failed"},
			"Idempotency-Key", "r-1", "X-Paywall-User", "alice")
		expectStatus(t, again, http.StatusCreated)
		if !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("replay differs:\n%s\n%s", first.body, again.body)
		}
	})
	t.Run("same key, other request", func(t *testing.T) {
		for _, r := range []reply{
			e.refund(key, "alice", other, "r-1", map[string]any{"reason": "the report failed"}),
			e.refund(key, "alice", id, "r-1", map[string]any{"reason": "another reason"}),
		} {
			expectStatus(t, r, http.StatusConflict)
			if r.errorCode(t) != "idempotency_key_reused" {
				t.Errorf("code %q", r.errorCode(t))
			}
		}
	})
	t.Run("refunded before", func(t *testing.T) {
		r := e.refund(key, "alice", id, "r-2", nil)
		expectStatus(t, r, http.StatusConflict)
		if r.errorCode(t) != "already_refunded" || !strings.Contains(string(r.body), refundID) {
			t.Errorf("second refund: %s", r.body)
		}
	})
	t.Run("stored answers pruned", func(t *testing.T) {
		// The ledger keys the reversal on the paywall and the app's key as well: a retry whose
		// stored answer is gone gets the same refund, and the key still cannot refund another.
		if _, err := e.db.Pool.Exec(t.Context(), `DELETE FROM api_idempotency`); err != nil {
			t.Fatal(err)
		}
		again := e.refund(key, "alice", id, "r-1", map[string]any{"reason": "the report failed"})
		expectStatus(t, again, http.StatusCreated)
		if again.json(t)["id"] != refundID {
			t.Errorf("retry after pruning made another refund: %s", again.body)
		}
		r := e.refund(key, "alice", other, "r-1", nil)
		expectStatus(t, r, http.StatusConflict)
		if r.errorCode(t) != "idempotency_key_reused" {
			t.Errorf("code %q", r.errorCode(t))
		}
	})
	e.wantMoney(wallet, pw.ID, money{wallet: 9_500_000, earnings: 495_000, fees: 5_000})
	e.checkLedger()
}

// neighbours is an API with two paywalls: alice has authorized both with one wallet, bob only
// the first ("Demo"); both wallets are funded.
type neighbours struct {
	*env
	pw                paywall.Paywall // Demo
	key, key2         string          // Demo's and Other's API keys
	wallet, bobWallet string
}

func newNeighbours(t *testing.T, aliceMicro, bobMicro int64) neighbours {
	t.Helper()
	n := neighbours{env: newEnv(t)}
	n.pw, n.key = n.newPaywall("Demo")
	pw2, key2 := n.newPaywall("Other")
	n.key2 = key2
	_, n.wallet = n.authorize(n.pw, "alice")
	if _, err := n.store.Authorize(t.Context(), pw2.ID, "alice", n.wallet); err != nil {
		t.Fatal(err)
	}
	_, n.bobWallet = n.authorize(n.pw, "bob")
	n.deposit(n.wallet, aliceMicro)
	n.deposit(n.bobWallet, bobMicro)
	return n
}

// TestRefundOnlyOwnCharges: everything that is not a charge of this paywall's user is 404, as
// an unknown id: another paywall's charge of the same wallet, another user's, a top-up, a
// withdrawal, a refund. Nothing moves.
func TestRefundOnlyOwnCharges(t *testing.T) {
	n := newNeighbours(t, 20_000_000, 5_000_000)
	e, pw, key, key2, wallet, bobWallet := n.env, n.pw, n.key, n.key2, n.wallet, n.bobWallet
	otherPaywalls := e.charge(key2, "alice", "1", "c")
	bobs := e.charge(key, "bob", "1", "c-bob")
	e.charge(key, "alice", "5", "c-alice")
	r := e.refund(key, "alice", e.charge(key, "alice", "1", "c-refunded"), "r", nil)
	expectStatus(t, r, http.StatusCreated)
	refundID := r.json(t)["id"].(string)
	expectStatus(t, e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "2"}, "Idempotency-Key", "p"), http.StatusCreated)
	earnings, err := e.ledger.History(t.Context(), ledger.Earnings(pw.ID), "", 1)
	if err != nil || earnings.Items[0].Kind != ledger.KindPayoutRequest {
		t.Fatalf("earnings history %+v, %v", earnings, err)
	}
	deposits, err := e.ledger.History(t.Context(), ledger.Wallet(wallet), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	deposit := deposits.Items[len(deposits.Items)-1]
	if deposit.Kind != ledger.KindDeposit {
		t.Fatalf("oldest item %+v", deposit)
	}
	before := e.money(wallet, pw.ID)
	for _, tt := range []struct{ name, id string }{
		{"another paywall's charge of the same wallet and user id", otherPaywalls},
		{"another user's charge", bobs},
		{"a top-up", deposit.TransferID},
		{"a withdrawal", earnings.Items[0].TransferID},
		{"a refund", refundID},
		{"no such transfer", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.refund(key, "alice", tt.id, "r-"+tt.id, nil)
			expectStatus(t, r, http.StatusNotFound)
			if r.errorCode(t) != "not_found" || !strings.Contains(string(r.body), "No charge of this user has that id") {
				t.Errorf("answer %s", r.body)
			}
		})
	}
	e.wantMoney(wallet, pw.ID, before)
	if b, _ := e.ledger.Balance(t.Context(), bobWallet); b.PostedMicro != 4_000_000 {
		t.Errorf("bob's wallet %+v", b)
	}
	e.checkLedger()
}

// TestRefundCaptures: a request through the paywall's own provider key (BYOK: wallet → earnings
// and fee) is refunded like a charge; one through the built-in provider, already paid, is 409
// and moves nothing.
func TestRefundCaptures(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	_, wallet := e.authorize(pw, "alice")
	e.deposit(wallet, 5_000_000)
	byok := e.capture(pw, "alice", wallet, ledger.Split{FeeMicro: 5_000, DeveloperMicro: 495_000})
	builtin := e.capture(pw, "alice", wallet, ledger.Split{ProviderMicro: 300_000, Provider: "openrouter", FeeMicro: 10_000, DeveloperMicro: 190_000})
	e.wantMoney(wallet, pw.ID, money{wallet: 4_000_000, earnings: 685_000, fees: 15_000, provider: 300_000})

	r := e.refund(key, "alice", builtin, "r-builtin", nil)
	expectStatus(t, r, http.StatusConflict)
	if r.errorCode(t) != "provider_cost_not_refundable" || !strings.Contains(string(r.body), "0.30 USDC") || !strings.Contains(string(r.body), "platform") {
		t.Errorf("built-in capture: %s", r.body)
	}
	e.wantMoney(wallet, pw.ID, money{wallet: 4_000_000, earnings: 685_000, fees: 15_000, provider: 300_000})

	r = e.refund(key, "alice", byok, "r-byok", nil)
	expectStatus(t, r, http.StatusCreated)
	if m := r.json(t); m["amount"] != "0.50" || m["refunded"] != byok || m["reason"] != "" {
		t.Errorf("BYOK refund: %s", r.body)
	}
	e.wantMoney(wallet, pw.ID, money{wallet: 4_500_000, earnings: 190_000, fees: 10_000, provider: 300_000})
	e.checkLedger()
}

// TestRefundAfterRevoke: a user who revoked the app can still be refunded, into the wallet the
// charge took the money from, with an empty body.
func TestRefundAfterRevoke(t *testing.T) {
	e := newCharged(t, 2_000_000, "1")
	pw, key, wallet, id := e.pw, e.key, e.wallet, e.chargeID
	expectStatus(t, e.app("DELETE", "/api/v1/users/alice/authorization", key, nil), http.StatusOK)
	e.authorize(pw, "alice") // and connected another wallet since
	r := e.app("POST", "/api/v1/users/alice/charges/"+id+"/refund", key, "", "Idempotency-Key", "r")
	expectStatus(t, r, http.StatusCreated)
	if r.json(t)["wallet"] != wallet {
		t.Errorf("refund went to %v, want the charged wallet %s", r.json(t)["wallet"], wallet)
	}
	e.wantMoney(wallet, pw.ID, money{wallet: 2_000_000})
	e.checkLedger()
}

// TestRefundInsufficientEarnings: once the earnings were withdrawn, a refund is 409 and moves
// nothing; the answer is not remembered, so the same key works after the withdrawal failed.
func TestRefundInsufficientEarnings(t *testing.T) {
	e := newCharged(t, 20_000_000, "10")
	pw, key, wallet, id := e.pw, e.key, e.wallet, e.chargeID
	p := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "9.9"}, "Idempotency-Key", "p")
	expectStatus(t, p, http.StatusCreated)
	before := e.money(wallet, pw.ID)

	r := e.refund(key, "alice", id, "r", nil)
	expectStatus(t, r, http.StatusConflict)
	msg, _ := r.json(t)["error"].(map[string]any)["message"].(string)
	if r.errorCode(t) != "insufficient_earnings" || !strings.Contains(msg, "(0.00 USDC)") || !strings.Contains(msg, "9.90 USDC") ||
		!strings.Contains(msg, "nothing was refunded") {
		t.Errorf("answer %s", r.body)
	}
	e.wantMoney(wallet, pw.ID, before)

	if _, err := e.ledger.FailPayout(t.Context(), p.json(t)["id"].(string), "test"); err != nil {
		t.Fatal(err)
	}
	r = e.refund(key, "alice", id, "r", nil)
	expectStatus(t, r, http.StatusCreated)
	e.wantMoney(wallet, pw.ID, money{wallet: 20_000_000})
	e.checkLedger()
}

// TestRefundConcurrent: refunds of one charge racing with different keys give it back once;
// every other one is told it was refunded, and none is told about the earnings it drained.
func TestRefundConcurrent(t *testing.T) {
	e := newCharged(t, 5_000_000, "2")
	pw, key, wallet, id := e.pw, e.key, e.wallet, e.chargeID
	const n = 8
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			replies[i] = e.refund(key, "alice", id, "race-"+string(rune('a'+i)), nil)
		})
	}
	wg.Wait()
	created := 0
	for i, r := range replies {
		switch {
		case r.status == http.StatusCreated:
			created++
		case r.status != http.StatusConflict || r.errorCode(t) != "already_refunded":
			t.Errorf("reply %d: %d %s", i, r.status, r.body)
		}
	}
	if created != 1 {
		t.Errorf("%d refunds succeeded, want 1", created)
	}
	e.wantMoney(wallet, pw.ID, money{wallet: 5_000_000})
	e.checkLedger()
}

func TestRefundRejectsBadInput(t *testing.T) {
	e := newCharged(t, 5_000_000, "1")
	pw, key, wallet, id := e.pw, e.key, e.wallet, e.chargeID
	before := e.money(wallet, pw.ID)
	tests := []struct {
		name    string
		id      string
		body    any
		idem    string
		ctype   string
		status  int
		code    string
		message string
	}{
		{"no key", id, nil, "", "", 400, "missing_idempotency_key", "Idempotency-Key"},
		{"key with space", id, nil, "a b", "", 400, "invalid_idempotency_key", "visible ASCII"},
		{"key too long", id, nil, strings.Repeat("k", 256), "", 400, "invalid_idempotency_key", "at most 255"},
		{"id not a UUID", "ch_123", nil, "k", "", 400, "invalid_charge_id", `got "ch_123"`},
		{"id without dashes", strings.ReplaceAll(id, "-", ""), nil, "k", "", 400, "invalid_charge_id", "a UUID such as"},
		{"id with a non-hex digit", "g" + id[1:], nil, "k", "", 400, "invalid_charge_id", "a UUID such as"},
		{"id as URN", "urn:uuid:" + id, nil, "k", "", 400, "invalid_charge_id", "a UUID such as"},
		{"reason too long", id, map[string]any{"reason": strings.Repeat("x", 501)}, "k", "", 400, "invalid_reason", "at most 500 bytes"},
		{"reason with NUL", id, map[string]any{"reason": "a\x00b"}, "k", "", 400, "invalid_reason", "no NUL"},
		{"reason not a string", id, map[string]any{"reason": 5}, "k", "", 400, "invalid_json", `"reason" must be a string`},
		{"unknown field", id, map[string]any{"amount": "1"}, "k", "", 400, "invalid_json", `unknown field "amount"`},
		{"not JSON", id, "reason=x", "k", "", 400, "invalid_json", "syntax error"},
		{"array", id, "[]", "k", "", 400, "invalid_json", "must be a"},
		{"two objects", id, `{}{}`, "k", "", 400, "invalid_json", "after its JSON object"},
		{"too big", id, `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`, "k", "", 400, "invalid_json", "larger than"},
		{"form content type", id, "reason=x", "k", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.expectRefusal(t, "/api/v1/users/alice/charges/"+tt.id+"/refund", key, tt.body, tt.idem, tt.ctype, tt.status, tt.code, tt.message)
		})
	}
	e.wantMoney(wallet, pw.ID, before)
	// An empty body, white space and {} are all "no reason".
	for i, body := range []any{"", " \n", map[string]any{}} {
		if i > 0 {
			id = e.charge(key, "alice", "1", "c"+string(rune('0'+i)))
		}
		r := e.refund(key, "alice", id, "ok"+string(rune('0'+i)), body)
		expectStatus(t, r, http.StatusCreated)
	}
	e.checkLedger()
}

// FuzzChargeID throws arbitrary path segments at the charge id parser: what it accepts is the
// canonical lower-case 8-4-4-4-12 form, and reading it again gives the same id.
func FuzzChargeID(f *testing.F) {
	for _, s := range []string{"5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d", "5C7B5D3E-8C1F-4B8E-9A55-3F0C1A2B3C4D", "",
		"5c7b5d3e8c1f4b8e9a553f0c1a2b3c4d", "{5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d}", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4g", "ch_1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := parseChargeID(s)
		if !ok {
			return
		}
		if len(id) != 36 || id != strings.ToLower(s) {
			t.Fatalf("%q read as %q", s, id)
		}
		for i, c := range id {
			dash := i == 8 || i == 13 || i == 18 || i == 23
			if dash != (c == '-') || (!dash && !strings.ContainsRune("0123456789abcdef", c)) {
				t.Fatalf("%q read as %q, not a canonical UUID", s, id)
			}
		}
		if again, ok := parseChargeID(id); !ok || again != id {
			t.Fatalf("%q does not read back", id)
		}
	})
}

// FuzzRefundBody throws arbitrary bodies at the refund's decoding and checks: it either refuses
// with a JSON 400 or yields a reason within bounds (an empty body being no reason).
func FuzzRefundBody(f *testing.F) {
	for _, s := range []string{``, ` `, `{}`, `{"reason":"x"}`, `{"reason":1}`, `{}{}`, `{"reason":"x","amount":"1"}`, `[`, `null`,
		`{"reason":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var rr refundRequest
		if !decodeFuzzed(t, body, &rr, decodeOptionalBody) {
			return
		}
		if len(bytes.TrimSpace(body)) == 0 && rr.Reason != "" {
			t.Fatalf("empty body gave reason %q", rr.Reason)
		}
		if textProblem("reason", rr.Reason) == "" && (len(rr.Reason) > maxDescriptionLen || strings.ContainsRune(rr.Reason, 0)) {
			t.Fatalf("accepted a reason beyond the limits: %q", rr.Reason)
		}
	})
}

// TestGetCharge: GET …/charges/{id} shows one of the user's charges or requests as the ledger
// holds it — what the wallet paid, the app's description and metadata, a request's model —
// whether the app may refund it, and its refund once made; on both route forms. Anything not
// this user's charge is 404, a malformed id 400.
func TestGetCharge(t *testing.T) {
	n := newNeighbours(t, 10_000_000, 1_000_000)
	e, pw, key, key2, wallet := n.env, n.pw, n.key, n.key2, n.wallet
	r := e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1.25", "description": "A report",
		"metadata": map[string]string{"order": "42"}}, "Idempotency-Key", "c")
	expectStatus(t, r, http.StatusCreated)
	chargeID := r.json(t)["id"].(string)
	byok := e.capture(pw, "alice", wallet, ledger.Split{FeeMicro: 1_000, DeveloperMicro: 19_000})
	builtin := e.capture(pw, "alice", wallet, ledger.Split{ProviderMicro: 10_000, Provider: "openrouter", FeeMicro: 500, DeveloperMicro: 4_500})
	get := func(user, id string) reply {
		t.Helper()
		return e.app("GET", "/api/v1/users/"+user+"/charges/"+id, key, nil)
	}

	m := get("alice", chargeID).json(t)
	if m["id"] != chargeID || m["kind"] != "charge" || m["user"] != "alice" || m["wallet"] != wallet || m["amount"] != "1.25" ||
		m["amount_micro"] != 1_250_000.0 || m["currency"] != "USDC" || m["description"] != "A report" ||
		m["refundable"] != true || m["refund"] != nil {
		t.Errorf("charge: %v", m)
	}
	if md, _ := m["metadata"].(map[string]any); len(md) != 1 || md["order"] != "42" {
		t.Errorf("charge's metadata %v, want the app's own {order: 42}", m["metadata"])
	}
	if m := get("alice", byok).json(t); m["kind"] != "request" || m["model"] != "m" || m["amount"] != "0.02" || m["refundable"] != true {
		t.Errorf("BYOK request: %v", m)
	}
	if m := get("alice", builtin).json(t); m["kind"] != "request" || m["amount"] != "0.015" || m["refundable"] != false || m["refund"] != nil {
		t.Errorf("built-in request (the provider was paid): %v", m)
	}

	rr := e.refund(key, "alice", chargeID, "r", map[string]any{"reason": "the report failed"})
	expectStatus(t, rr, http.StatusCreated)
	refundID := rr.json(t)["id"].(string)
	h := e.app("GET", "/api/v1/user/charges/"+strings.ToUpper(chargeID), key, nil, "X-Paywall-User", "alice")
	expectStatus(t, h, http.StatusOK)
	m = h.json(t)
	refund, _ := m["refund"].(map[string]any)
	if m["id"] != chargeID || m["refundable"] != false || refund["id"] != refundID || refund["reason"] != "the report failed" || refund["created_at"] == nil {
		t.Errorf("after its refund: %s", h.body)
	}

	for _, tt := range []struct{ name, user, id string }{
		{"another paywall's charge", "alice", e.charge(key2, "alice", "1", "c-other")},
		{"another user's charge", "bob", chargeID},
		{"a refund", "alice", refundID},
		{"no such transfer", "alice", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d"},
	} {
		r := get(tt.user, tt.id)
		expectStatus(t, r, http.StatusNotFound)
		if r.errorCode(t) != "not_found" {
			t.Errorf("%s: %s", tt.name, r.body)
		}
	}
	for _, bad := range []string{"42", "5c7b5d3e8c1f4b8e9a553f0c1a2b3c4d", "{5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d}"} {
		r := get("alice", bad)
		expectStatus(t, r, http.StatusBadRequest)
		if r.errorCode(t) != "invalid_charge_id" {
			t.Errorf("id %q: %s", bad, r.body)
		}
	}
}

// TestOwnCharge: what a refund may reverse is decided from the transfer alone — its kind, its
// metadata and the shape of its legs; a transfer whose metadata names this paywall and user but
// whose money went elsewhere is not this paywall's charge.
func TestOwnCharge(t *testing.T) {
	const pw, user, wallet, other = "pw", "alice", "0x00000000000000000000000000000000000000c1", "0x00000000000000000000000000000000000000c2"
	meta := map[string]string{ledger.MetaPaywall: pw, ledger.MetaUser: user}
	transfer := func(kind ledger.TransferKind, entries ...ledger.Entry) ledger.Transfer {
		return ledger.Transfer{Kind: kind, Metadata: meta, Entries: entries}
	}
	debit := ledger.Entry{Account: ledger.Wallet(wallet), AmountMicro: -1_000}
	fee := ledger.Entry{Account: ledger.PlatformFees(), AmountMicro: 10}
	earn := ledger.Entry{Account: ledger.Earnings(pw), AmountMicro: 990}
	tests := []struct {
		name string
		t    ledger.Transfer
		want chargeLegs
		err  error
	}{
		{"charge", transfer(ledger.KindCharge, debit, fee, earn), chargeLegs{wallet: wallet, walletMicro: 1_000, developerMicro: 990}, nil},
		{"built-in capture", transfer(ledger.KindCapture, ledger.Entry{Account: ledger.Wallet(wallet), AmountMicro: -1_500}, fee, earn,
			ledger.Entry{Account: ledger.ProviderCosts("openrouter"), AmountMicro: 500}),
			chargeLegs{wallet: wallet, walletMicro: 1_500, developerMicro: 990, providerMicro: 500}, nil},
		{"zero legs skipped", transfer(ledger.KindCapture, ledger.Entry{Account: ledger.Wallet(other)}, debit, fee, earn),
			chargeLegs{wallet: wallet, walletMicro: 1_000, developerMicro: 990}, nil},
		{"not found (zero transfer)", ledger.Transfer{}, chargeLegs{}, errNotRefundable},
		{"a deposit", transfer(ledger.KindDeposit, ledger.Entry{Account: ledger.Wallet(wallet), AmountMicro: 1_000}), chargeLegs{}, errNotRefundable},
		{"a reversal", transfer(ledger.KindReversal, ledger.Entry{Account: ledger.Wallet(wallet), AmountMicro: 1_000}), chargeLegs{}, errNotRefundable},
		{"another paywall's metadata", ledger.Transfer{Kind: ledger.KindCharge, Metadata: map[string]string{ledger.MetaPaywall: "pw2", ledger.MetaUser: user},
			Entries: []ledger.Entry{debit, fee, earn}}, chargeLegs{}, errNotRefundable},
		{"another user's metadata", ledger.Transfer{Kind: ledger.KindCharge, Metadata: map[string]string{ledger.MetaPaywall: pw, ledger.MetaUser: "bob"},
			Entries: []ledger.Entry{debit, fee, earn}}, chargeLegs{}, errNotRefundable},
		{"another paywall's earnings", transfer(ledger.KindCharge, debit, fee, ledger.Entry{Account: ledger.Earnings("pw2"), AmountMicro: 990}),
			chargeLegs{}, errNotRefundable},
		{"a second wallet", transfer(ledger.KindCharge, debit, ledger.Entry{Account: ledger.Wallet(other), AmountMicro: -1_000}, fee,
			ledger.Entry{Account: ledger.Earnings(pw), AmountMicro: 1_990}), chargeLegs{}, errNotRefundable},
		{"money into the wallet", transfer(ledger.KindCharge, ledger.Entry{Account: ledger.Wallet(wallet), AmountMicro: 1_000},
			ledger.Entry{Account: ledger.Earnings(pw), AmountMicro: -1_000}), chargeLegs{}, errNotRefundable},
		{"the fee flowing out", transfer(ledger.KindCharge, debit, ledger.Entry{Account: ledger.PlatformFees(), AmountMicro: -10},
			ledger.Entry{Account: ledger.Earnings(pw), AmountMicro: 1_010}), chargeLegs{}, errNotRefundable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ownCharge(tt.t, pw, user)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("ownCharge = %+v, %v; want %+v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}
