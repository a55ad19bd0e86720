package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestPayoutCapUnderConcurrency: many withdrawals of one paywall at the same moment, each
// alone within the 24-hour cap, together may use the cap once: with 60 USDC per 24 hours,
// exactly three of eight 20 USDC requests pass. Racing retries of one key get one payout.
// Another paywall's withdrawal does not wait for them.
func TestPayoutCapUnderConcurrency(t *testing.T) {
	e := newEnv(t) // min 1, max 50, 60 per 24 hours
	pw, key := e.newPaywall("Demo")
	e.earn(pw, key, "200") // 198 available: the earnings are never the limit here
	const n = 8
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			replies[i] = e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "20"}, "Idempotency-Key", fmt.Sprint("race-", i))
		})
	}
	wg.Wait()
	created := 0
	for i, r := range replies {
		switch r.status {
		case http.StatusCreated:
			created++
		case http.StatusTooManyRequests:
			if r.errorCode(t) != "payout_limit" {
				t.Errorf("reply %d: %s", i, r.body)
			}
		default:
			t.Errorf("reply %d: %d %s", i, r.status, r.body)
		}
	}
	ps, err := e.ledger.Payouts(t.Context(), pw.ID, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, p := range ps {
		sum += p.AmountMicro
	}
	if created != 3 || len(ps) != 3 || sum != 60_000_000 {
		t.Errorf("%d answered 201, %d payouts in the ledger for %d micro-USDC; want 3 for 60 USDC (the cap)", created, len(ps), sum)
	}

	// Racing retries of one new key, with 20 USDC of cap back from a failed payout: one
	// payout, every reply the same.
	if _, err := e.ledger.FailPayout(t.Context(), ps[0].ID, "test"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		wg.Go(func() {
			replies[i] = e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "20"}, "Idempotency-Key", "retry")
		})
	}
	wg.Wait()
	for i, r := range replies {
		if r.status != http.StatusCreated || !bytes.Equal(r.body, replies[0].body) {
			t.Errorf("retry %d: %d %s (first: %s)", i, r.status, r.body, replies[0].body)
		}
	}
	if ps, _ := e.ledger.Payouts(t.Context(), pw.ID, ledger.PayoutRequested, 100); len(ps) != 3 {
		t.Errorf("%d requested payouts after the retries, want 3", len(ps))
	}
}

// TestPayoutLockAcrossReplicas: a paywall's payout lock held elsewhere (as another replica
// would hold it, in its own transaction) makes this paywall's withdrawal wait until it is
// released, and does not stop another paywall's.
func TestPayoutLockAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	pw1, key1 := e.newPaywall("One")
	pw2, key2 := e.newPaywall("Two")
	e.earn(pw1, key1, "10")
	e.earn(pw2, key2, "10")
	other, err := e.db.Pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback(context.WithoutCancel(t.Context())) }()
	if _, err := other.Exec(t.Context(), `INSERT INTO api_payout_guards (paywall_id) VALUES ($1)`, pw1.ID); err != nil {
		t.Fatal(err)
	}

	done := make(chan reply, 1)
	go func() {
		done <- e.app("POST", "/api/v1/payouts", key1, map[string]any{"amount": "5"}, "Idempotency-Key", "waits")
	}()
	select {
	case r := <-done:
		t.Fatalf("the withdrawal did not wait for the lock: %d %s", r.status, r.body)
	case <-time.After(500 * time.Millisecond):
	}
	// The gate admits one lock at a time with the test pool (4 connections): give the other
	// paywall its turn through a second replica of the API on the same database.
	replica, err := New(e.api.deps, e.api.opts)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/api/v1/payouts", strings.NewReader(`{"amount":"5"}`))
	req.Header.Set("Authorization", "Bearer "+key2)
	req.Header.Set("Idempotency-Key", "other")
	replica.ServeHTTP(w, req)
	if w.Code != http.StatusCreated {
		t.Errorf("another paywall's withdrawal: %d %s", w.Code, w.Body)
	}

	if err := other.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		expectStatus(t, r, http.StatusCreated)
	case <-time.After(10 * time.Second):
		t.Fatal("the withdrawal did not go through after the lock was released")
	}
}

// TestPayoutChains: the developer picks the chain among the configured ones (decimal or
// 0x-hex), gets the first when naming none, and an unknown chain is refused with the list.
func TestPayoutChains(t *testing.T) {
	e := newEnv(t, func(_ *Deps, o *Options) { o.PayoutChains = []string{"1337", "137"} })
	pw, key := e.newPaywall("Demo")
	e.earn(pw, key, "100")
	tests := []struct {
		name, chain string
		status      int
		want        string // the payout's chain_id, or the error code
	}{
		{"default: the first", "", 201, "1337"},
		{"the second, decimal", "137", 201, "137"},
		{"the second, hex", "0x89", 201, "137"},
		{"unknown", "1", 400, "unsupported_chain"},
		{"not a number", "polygon", 400, "unsupported_chain"},
		{"negative", "-137", 400, "unsupported_chain"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{"amount": "2"}
			if tt.chain != "" {
				body["chain_id"] = tt.chain
			}
			r := e.app("POST", "/api/v1/payouts", key, body, "Idempotency-Key", fmt.Sprint("chain-", i))
			expectStatus(t, r, tt.status)
			if tt.status == 201 {
				if got := r.json(t)["chain_id"]; got != tt.want {
					t.Errorf("chain_id %v, want %s", got, tt.want)
				}
				return
			}
			if r.errorCode(t) != tt.want || !strings.Contains(string(r.body), "1337, 137") {
				t.Errorf("refusal: %s", r.body)
			}
		})
	}
	// The ledger holds each payout on its chain's in-flight account.
	ps, err := e.ledger.Payouts(t.Context(), pw.ID, ledger.PayoutRequested, 10)
	if err != nil {
		t.Fatal(err)
	}
	chains := map[string]int{}
	for _, p := range ps {
		chains[p.ChainID]++
	}
	if chains["1337"] != 1 || chains["137"] != 2 {
		t.Errorf("payouts by chain %v", chains)
	}
	// The chain is part of the request: the same key on another chain is a conflict, the
	// same chain spelled otherwise a replay.
	r := e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "2", "chain_id": "1337"}, "Idempotency-Key", "chain-1")
	expectStatus(t, r, http.StatusConflict)
	r = e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "2", "chain_id": "137"}, "Idempotency-Key", "chain-2")
	if r.status != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay with the chain spelled in decimal: %d %s", r.status, r.body)
	}

	// New refuses a payout chain that is not a decimal chain id.
	o := e.api.opts
	o.PayoutChains = []string{"0x89"}
	if _, err := New(e.api.deps, o); err == nil {
		t.Error("New accepted a hex payout chain id")
	}
}

// TestPayoutCapCountsEveryPayout: the 24-hour cap sums every payout of the window, however
// many (more than a page of the ledger's listing here), on the database's clock: the API's
// own clock moving a day on frees nothing, while payouts dated more than 24 hours back by the
// database (aged by moving created_at, as time passing would) no longer count.
func TestPayoutCapCountsEveryPayout(t *testing.T) {
	const n = ledger.MaxPayoutsPage + 1
	e := newEnv(t, func(_ *Deps, o *Options) { o.MinPayoutMicro = 1; o.DailyPayoutMicro = n * 10_000 })
	pw, key := e.newPaywall("Demo")
	e.earn(pw, key, "20") // 19.80 available
	// 0.01 USDC each: 10.01 USDC in all, the whole cap.
	for i := range n {
		if _, err := e.ledger.RequestPayout(t.Context(), ledger.PayoutRequest{
			Key: fmt.Sprint("many-", i), Paywall: pw.ID, ChainID: "1337", To: pw.PayoutAddress, AmountMicro: 10_000,
		}); err != nil {
			t.Fatal(err)
		}
	}
	withdraw := func(idem, amount string) reply {
		return e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": amount}, "Idempotency-Key", idem)
	}
	refused := func(r reply, used string) {
		t.Helper()
		expectStatus(t, r, http.StatusTooManyRequests)
		if r.errorCode(t) != "payout_limit" || !strings.Contains(string(r.body), used+" USDC were requested in the last 24 hours") {
			t.Errorf("want payout_limit with %s USDC used: %s", used, r.body)
		}
	}
	age := func(limit int) {
		t.Helper()
		if _, err := e.db.Pool.Exec(t.Context(), `UPDATE ledger_payouts SET created_at = created_at - INTERVAL '25 hours'
			WHERE id IN (SELECT id FROM ledger_payouts WHERE paywall = $1 ORDER BY created_at, id LIMIT $2)`, pw.ID, limit); err != nil {
			t.Fatal(err)
		}
	}
	// A sum over one page (1,000 payouts, 10.00 USDC) would let this through.
	refused(withdraw("over", "0.000001"), "10.01")

	e.clock.Advance(payoutWindow + time.Hour)
	refused(withdraw("app-clock", "0.000001"), "10.01")
	e.clock.Advance(-payoutWindow - time.Hour)

	age(500) // 5.00 USDC leave the window
	expectStatus(t, withdraw("half-a-day-later", "5"), http.StatusCreated)
	refused(withdraw("over-again", "0.000001"), "10.01")

	age(n + 1) // all of them
	expectStatus(t, withdraw("a-day-later", "4"), http.StatusCreated)
}

// TestEarningsHistory: GET /api/v1/earnings/history lists what moved the paywall's earnings,
// newest first — a charge's and a request's share, a refund, a withdrawal — each with its
// metadata; the page adds up to the earnings; the cursor pages through; another paywall sees
// none of it; a bad limit or cursor is 400.
func TestEarningsHistory(t *testing.T) {
	n := newNeighbours(t, 20_000_000, 1_000_000)
	e, pw, key, key2, wallet := n.env, n.pw, n.key, n.key2, n.wallet
	charge := e.charge(key, "alice", "3", "c")
	e.capture(pw, "alice", wallet, ledger.Split{FeeMicro: 1_000, DeveloperMicro: 19_000})
	refunded := e.charge(key, "alice", "1", "c-2")
	expectStatus(t, e.refund(key, "alice", refunded, "r", map[string]any{"reason": "twice"}), http.StatusCreated)
	expectStatus(t, e.app("POST", "/api/v1/payouts", key, map[string]any{"amount": "1"}, "Idempotency-Key", "p"), http.StatusCreated)

	r := e.app("GET", "/api/v1/earnings/history", key, nil)
	expectStatus(t, r, http.StatusOK)
	var h struct {
		Paywall string `json:"paywall"`
		Items   []struct {
			ID          string            `json:"id"`
			Kind        string            `json:"kind"`
			AmountMicro int64             `json:"amount_micro"`
			Metadata    map[string]string `json:"metadata"`
		} `json:"items"`
		Next string `json:"next"`
	}
	if err := json.Unmarshal(r.body, &h); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var sum int64
	for _, it := range h.Items {
		kinds = append(kinds, it.Kind)
		sum += it.AmountMicro
	}
	want := []string{"payout_request", "reversal", "charge", "capture", "charge"}
	if h.Paywall != pw.ID || !slices.Equal(kinds, want) || h.Next != "" {
		t.Fatalf("earnings history of %s: %v (next %q), want %v", h.Paywall, kinds, h.Next, want)
	}
	if it := h.Items[4]; it.ID != charge || it.AmountMicro <= 0 || it.Metadata["user"] != "alice" {
		t.Errorf("the first charge's share: %+v", it)
	}
	if it := h.Items[3]; it.AmountMicro != 19_000 || it.Metadata["model"] != "m" {
		t.Errorf("the request's share: %+v", it)
	}
	if it := h.Items[1]; it.AmountMicro != -h.Items[2].AmountMicro || it.Metadata["reason"] != "twice" {
		t.Errorf("the refund gives back the refunded charge's share: %+v against %+v", it, h.Items[2])
	}
	if it := h.Items[0]; it.AmountMicro != -1_000_000 {
		t.Errorf("the withdrawal: %+v", it)
	}
	earnings := e.app("GET", "/api/v1/earnings", key, nil).json(t)
	if float64(sum) != earnings["available_micro"] {
		t.Errorf("the history adds up to %d µUSDC, the earnings available are %v", sum, earnings["available_micro"])
	}

	// Two at a time, following the cursor, gives the same items.
	var paged []string
	for cursor, pages := "", 0; ; pages++ {
		if pages > 5 {
			t.Fatal("the cursor does not end")
		}
		p := e.app("GET", "/api/v1/earnings/history?limit=2&cursor="+url.QueryEscape(cursor), key, nil).json(t)
		for _, it := range p["items"].([]any) {
			paged = append(paged, it.(map[string]any)["kind"].(string))
		}
		if cursor = p["next"].(string); cursor == "" {
			break
		}
	}
	if !slices.Equal(paged, want) {
		t.Errorf("paged by two: %v, want %v", paged, want)
	}

	if items := e.app("GET", "/api/v1/earnings/history", key2, nil).json(t)["items"].([]any); len(items) != 0 {
		t.Errorf("another paywall sees %v", items)
	}
	for q, code := range map[string]string{"limit=0": "invalid_limit", "limit=201": "invalid_limit", "cursor=nope": "invalid_cursor"} {
		r := e.app("GET", "/api/v1/earnings/history?"+q, key, nil)
		expectStatus(t, r, http.StatusBadRequest)
		if r.errorCode(t) != code {
			t.Errorf("%s: %s", q, r.body)
		}
	}
}
