package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-dev/tollgate/pricing"
)

func TestChargeIdempotency(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	_, wallet := e.authorize(pw, "alice")
	e.deposit(wallet, 10_000_000)

	body := map[string]any{"amount": "1.5", "description": "report #12", "metadata": map[string]string{"order": "12"}}
	first := e.app("POST", "/api/v1/users/alice/charges", key, body, "Idempotency-Key", "k-1")
	expectStatus(t, first, http.StatusCreated)
	m := first.json(t)
	if m["success"] != true || m["amount"] != "1.50" || m["amount_micro"] != 1_500_000.0 || m["currency"] != "USDC" || m["wallet"] != wallet {
		t.Fatalf("charge answer: %s", first.body)
	}

	// The same key and the same request (written differently) get the same answer, once.
	same := map[string]any{"amount": "1.500000", "description": "report #12", "metadata": map[string]string{"order": "12"}}
	again := e.app("POST", "/api/v1/user/charges", key, same, "Idempotency-Key", "k-1", "X-Paywall-User", "alice")
	expectStatus(t, again, http.StatusCreated)
	if !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay differs:\n%s\n%s", first.body, again.body)
	}
	// The same key with another request is a conflict and charges nothing.
	other := e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "2"}, "Idempotency-Key", "k-1")
	expectStatus(t, other, http.StatusConflict)
	if other.errorCode(t) != "idempotency_key_reused" {
		t.Errorf("code %q", other.errorCode(t))
	}
	b, err := e.ledger.Balance(t.Context(), wallet)
	if err != nil || b.AvailableMicro != 8_500_000 {
		t.Errorf("balance %+v %v, want 8.5 USDC (charged once)", b, err)
	}
	// The developer earned the charge less the 1 % platform fee.
	earn, err := e.ledger.Earnings(t.Context(), pw.ID)
	if err != nil || earn.AvailableMicro != 1_485_000 {
		t.Errorf("earnings %+v %v, want 1.485 USDC", earn, err)
	}
	// Keys are per paywall: another paywall may use the same key for its own charge.
	pw2, key2 := e.newPaywall("Other")
	if _, err := e.store.Authorize(t.Context(), pw2.ID, "zed", wallet); err != nil {
		t.Fatal(err)
	}
	r := e.app("POST", "/api/v1/users/zed/charges", key2, map[string]any{"amount": "2"}, "Idempotency-Key", "k-1")
	expectStatus(t, r, http.StatusCreated)
}

// TestChargeConcurrentSameKey: racing retries of one charge debit the wallet once and all get
// the same answer.
func TestChargeConcurrentSameKey(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	_, wallet := e.authorize(pw, "alice")
	e.deposit(wallet, 10_000_000)
	const n = 8
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			replies[i] = e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1"}, "Idempotency-Key", "race")
		})
	}
	wg.Wait()
	for i, r := range replies {
		if r.status != http.StatusCreated || !bytes.Equal(r.body, replies[0].body) {
			t.Errorf("reply %d: %d %s (first: %s)", i, r.status, r.body, replies[0].body)
		}
	}
	if b, _ := e.ledger.Balance(t.Context(), wallet); b.AvailableMicro != 9_000_000 {
		t.Errorf("balance %d, want 9 USDC", b.AvailableMicro)
	}
}

// TestChargeNeedsAction: a user who has not authorized, or cannot afford the charge, gets the
// paywall's own message with the right link, as the chat would; nothing is charged, and a
// retry with the same key after topping up goes through.
func TestChargeNeedsAction(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")

	r := e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1"}, "Idempotency-Key", "k")
	expectStatus(t, r, http.StatusForbidden)
	m := r.json(t)
	link := m["link"].(string)
	msg := m["error"].(map[string]any)["message"].(string)
	if m["action"] != "authorize" || m["success"] != false || !strings.Contains(link, "/connect?t=") {
		t.Errorf("not-authorized answer: %s", r.body)
	}
	if want := pw.AuthorizeMessage(link); msg != want {
		t.Errorf("message %q, want the paywall's authorize message %q", msg, want)
	}

	_, wallet := e.authorize(pw, "alice")
	e.deposit(wallet, 250_000)
	r = e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1"}, "Idempotency-Key", "k")
	expectStatus(t, r, http.StatusPaymentRequired)
	m = r.json(t)
	link = m["link"].(string)
	msg = m["error"].(map[string]any)["message"].(string)
	if m["action"] != "topup" || m["error"].(map[string]any)["code"] != "insufficient_funds" || !strings.Contains(link, "/topup?t=") {
		t.Errorf("insufficient answer: %s", r.body)
	}
	if want := pw.TopUpMessage(link, 250_000); msg != want || !strings.Contains(msg, "0.25") {
		t.Errorf("message %q, want the paywall's top-up message %q", msg, want)
	}
	if b, _ := e.ledger.Balance(t.Context(), wallet); b.AvailableMicro != 250_000 {
		t.Errorf("a declined charge moved money: %+v", b)
	}

	e.deposit(wallet, 1_000_000)
	r = e.app("POST", "/api/v1/users/alice/charges", key, map[string]any{"amount": "1"}, "Idempotency-Key", "k")
	expectStatus(t, r, http.StatusCreated)
	if b, _ := e.ledger.Balance(t.Context(), wallet); b.AvailableMicro != 250_000 {
		t.Errorf("balance after the charge: %+v", b)
	}
}

func TestChargeRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	_, wallet := e.authorize(pw, "alice")
	e.deposit(wallet, 5_000_000)
	long := strings.Repeat("x", 501)
	many := map[string]string{}
	for i := range 21 {
		many[string(rune('a'+i))] = "v"
	}
	tests := []struct {
		name    string
		body    any
		idem    string
		ctype   string
		status  int
		code    string
		message string
	}{
		{"no key", map[string]any{"amount": "1"}, "", "", 400, "missing_idempotency_key", "Idempotency-Key"},
		{"key with space", map[string]any{"amount": "1"}, "a b", "", 400, "invalid_idempotency_key", "visible ASCII"},
		{"key too long", map[string]any{"amount": "1"}, strings.Repeat("k", 256), "", 400, "invalid_idempotency_key", "at most 255"},
		{"no amount", map[string]any{}, "k", "", 400, "invalid_amount", "decimal string"},
		{"zero", map[string]any{"amount": "0"}, "k", "", 400, "invalid_amount", "more than 0"},
		{"zero with places", map[string]any{"amount": "0.000000"}, "k", "", 400, "invalid_amount", "more than 0"},
		{"negative", map[string]any{"amount": "-1"}, "k", "", 400, "invalid_amount", "decimal string"},
		{"seven places", map[string]any{"amount": "1.0000001"}, "k", "", 400, "invalid_amount", "at most 6 places"},
		{"exponent", map[string]any{"amount": "1e3"}, "k", "", 400, "invalid_amount", "decimal string"},
		{"spaces", map[string]any{"amount": " 1"}, "k", "", 400, "invalid_amount", "decimal string"},
		{"comma", map[string]any{"amount": "1,5"}, "k", "", 400, "invalid_amount", "decimal string"},
		{"number, not string", map[string]any{"amount": 1.5}, "k", "", 400, "invalid_json", `"amount" must be a string`},
		{"too large", map[string]any{"amount": "1000.000001"}, "k", "", 400, "amount_too_large", "at most 1000.00"},
		{"huge", map[string]any{"amount": "99999999999999999999"}, "k", "", 400, "invalid_amount", "decimal string"},
		{"unknown field", map[string]any{"amount": "1", "user": "bob"}, "k", "", 400, "invalid_json", `unknown field "user"`},
		{"not JSON", "amount=1", "k", "", 400, "invalid_json", "syntax error"},
		{"two objects", `{"amount":"1"}{"amount":"2"}`, "k", "", 400, "invalid_json", "after its JSON object"},
		{"empty", "", "k", "", 400, "invalid_json", "empty"},
		{"too big", `{"amount":"1","description":"` + strings.Repeat("x", 70<<10) + `"}`, "k", "", 400, "invalid_json", "larger than"},
		{"form content type", map[string]any{"amount": "1"}, "k", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "application/json"},
		{"long description", map[string]any{"amount": "1", "description": long}, "k", "", 400, "invalid_metadata", "at most 500"},
		{"many metadata keys", map[string]any{"amount": "1", "metadata": many}, "k", "", 400, "invalid_metadata", "at most 20 keys"},
		// The ledger keeps metadata as JSONB, which has no NUL: a 400, not a failed write.
		{"NUL in description", map[string]any{"amount": "1", "description": "a\x00b"}, "k", "", 400, "invalid_metadata", "no NUL"},
		{"NUL in metadata value", map[string]any{"amount": "1", "metadata": map[string]string{"k": "\x00"}}, "k", "", 400, "invalid_metadata", "no NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.expectRefusal(t, "/api/v1/users/alice/charges", key, tt.body, tt.idem, tt.ctype, tt.status, tt.code, tt.message)
		})
	}
	if b, _ := e.ledger.Balance(t.Context(), wallet); b.AvailableMicro != 5_000_000 {
		t.Errorf("bad input moved money: %+v", b)
	}
}

// FuzzChargeAmount throws arbitrary amount strings at the charge endpoint's parser: anything it
// accepts is positive, within bounds, and prints back to the same number of micro-USDC.
func FuzzChargeAmount(f *testing.F) {
	for _, s := range []string{"1", "0.25", "1.000000", "0", "-1", "1e3", "1.0000001", " 1", "99999999999999999999", ".5", "5."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec := &capturedResponse{header: http.Header{}, status: 200}
		micro, ok := parseAmount(rec, s, 1_000_000_000)
		if !ok {
			if rec.status != http.StatusBadRequest || !bytes.Contains(rec.body.Bytes(), []byte(`"param":"amount"`)) {
				t.Fatalf("refusal of %q is not a 400 about the amount: %d %s", s, rec.status, rec.body.String())
			}
			return
		}
		if micro <= 0 || micro > 1_000_000_000 {
			t.Fatalf("accepted %q as %d micro-USDC", s, micro)
		}
		rec2 := &capturedResponse{header: http.Header{}}
		if again, ok := parseAmount(rec2, pricing.FormatUSDC(micro), 1_000_000_000); !ok || again != micro {
			t.Fatalf("%q → %d does not round-trip", s, micro)
		}
	})
}

// FuzzChargeBody throws arbitrary bodies at the charge endpoint's decoding and checks: it
// either refuses with a 400/415 JSON error naming what is wrong, or yields a positive bounded
// amount and metadata within limits.
func FuzzChargeBody(f *testing.F) {
	for _, s := range []string{`{"amount":"1"}`, `{"amount":"0.25","description":"x","metadata":{"k":"v"}}`,
		`{"amount":1}`, `{"amount":"1"}{}`, `{"amount":"1","extra":true}`, ``, `[`, `{"metadata":{"":""}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var cr chargeRequest
		if !decodeFuzzed(t, body, &cr, decodeBody) {
			return
		}
		micro, ok := parseAmount(&capturedResponse{header: http.Header{}}, cr.Amount, 1_000_000_000)
		if !ok {
			return
		}
		if micro <= 0 || micro > 1_000_000_000 {
			t.Fatalf("accepted amount %q as %d", cr.Amount, micro)
		}
		if problem := checkMetadata(cr.Description, cr.Metadata); problem == "" {
			if len(cr.Metadata) > maxMetadataKeys || len(cr.Description) > maxDescriptionLen {
				t.Fatalf("accepted metadata beyond the limits: %d keys, %d bytes", len(cr.Metadata), len(cr.Description))
			}
		}
	})
}

// decodeFuzzed runs decode on a fuzzed body and reports whether it took it; a refusal must be
// a JSON 400.
func decodeFuzzed(t *testing.T, body []byte, v any, decode func(http.ResponseWriter, *http.Request, any) bool) bool {
	t.Helper()
	rec := &capturedResponse{header: http.Header{}, status: 200}
	req := httptest.NewRequest(http.MethodPost, "/api/v1/users/u/charges", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if decode(rec, req, v) {
		return true
	}
	if rec.status != http.StatusBadRequest || !json.Valid(rec.body.Bytes()) {
		t.Fatalf("refusal is not a JSON 400: %d %s", rec.status, rec.body.String())
	}
	return false
}

// expectRefusal posts body to path as the paywall with apiKey, with the Idempotency-Key and
// Content-Type given ("" sends none), and checks that the answer is the error status and code
// whose message says saying.
func (e *env) expectRefusal(t *testing.T, path, apiKey string, body any, idem, ctype string, status int, code, saying string) {
	t.Helper()
	var h []string
	if idem != "" {
		h = append(h, "Idempotency-Key", idem)
	}
	if ctype != "" {
		h = append(h, "Content-Type", ctype)
	}
	r := e.app("POST", path, apiKey, body, h...)
	expectStatus(t, r, status)
	if got := r.errorCode(t); got != code {
		t.Errorf("code %q, want %q", got, code)
	}
	if msg := r.json(t)["error"].(map[string]any)["message"].(string); !strings.Contains(msg, saying) {
		t.Errorf("message %q does not say %q", msg, saying)
	}
}
