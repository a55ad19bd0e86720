package extproc

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pricing"
)

// Why reserve's request_too_expensive answer cannot be reached.
//
// reserve prices the request's worst case (holdAmount → pricing.Price.CostMicro) on attempt 0
// and, when that fails, tries again after the affordability clamp; only a failure after the
// clamp answers 400 request_too_expensive. After the clamp the completion budget n (all
// choices together) is at most pricing.AffordableTokens(price, markup, available, prompt):
// either n = want ≤ afford, or n = afford ≥ minTokens ≥ 1, and budget × choices never exceeds
// AffordableTokens because afford is that divided by choices. AffordableTokens is the largest
// n whose worst case costs at most the available balance — the same terms as holdAmount (the
// prompt at the uncached Input rate, every completion token at the dearer of Output and
// Reasoning, the request fee, the markup, rounded up once), compared exactly
// (pricing.TestAffordableTokensIsTheLargestBudget). So the clamped amount is at most the
// balance, itself an int64: it cannot overflow. The other errors of CostMicro cannot occur
// there either: a markup outside 0…MaxMarkupBps, a negative rate or a negative token count
// make AffordableTokens 0, which is below minTokens (at least 1: Config.withDefaults, paywall
// validation), so the user gets the top-up message before holdAmount is called again.
//
// TestClampAlwaysPricesTheBudget checks that bound on prices at the limits of what the
// catalog's decimal parser accepts; TestUnpriceableRequestIsClamped shows, over the real
// server, ledger and catalog, a request whose worst case exceeds int64 being clamped to what
// the wallet affords, or answered with the top-up message, never refused as too expensive.

// TestClampAlwaysPricesTheBudget: whatever the price (rates of up to 40 significant digits
// with exponents within ±40, as pricing.ParseDecimal accepts, fallbacks set or not, a request
// fee), markup, balance, prompt, number of choices and asked budget, the budget the clamp
// leaves — when it leaves one at all (≥ minTokens) — is priced by holdAmount without error and
// costs at most the balance. It calls reserve's clamp, clampBudget, itself.
func TestClampAlwaysPricesTheBudget(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	// wide is a rate anywhere the parser allows; usual is one of 1–6 digits between 10^-12 and
	// 10^18 micro-USDC per token, where budgets are clamped to a few tokens or millions.
	rate := func(wide bool) pricing.Decimal {
		for {
			n, exp := 1+r.IntN(6), r.IntN(31)-18
			if wide {
				n, exp = 1+r.IntN(40), r.IntN(81)-60
			}
			var b strings.Builder
			b.WriteByte(byte('1' + r.IntN(9)))
			for range n - 1 {
				b.WriteByte(byte('0' + r.IntN(10)))
			}
			// The parser refuses exponents beyond ±40 once normalised: draw again.
			if d, err := pricing.ParseDecimal(b.String() + "e" + strconv.Itoa(exp)); err == nil {
				return d
			}
		}
	}
	logUniform := func(maxBits int) int64 { return r.Int64N(int64(1) << r.IntN(maxBits)) }
	const cases = 20000
	var unpriced, clamped int
	for i := range cases {
		wide := i%2 == 0
		rate := func() pricing.Decimal { return rate(wide) }
		p := pricing.Price{Input: rate(), Output: rate()}
		if r.IntN(2) == 0 {
			p.Reasoning = rate()
		}
		if r.IntN(3) == 0 {
			p.Request = rate()
		}
		markup := r.Int64N(pricing.MaxMarkupBps + 1)
		prompt := withMargin(logUniform(32), 20)
		choices := 1 + r.Int64N(maxChoices)
		proc := &processor{price: p}
		want := 1 + logUniform(40)
		available := logUniform(63)
		if !wide {
			// A balance that affords about `tokens` per choice, and a budget asked beyond it.
			tokens := 1 + logUniform(30)
			available = math.MaxInt64
			if c, err := proc.holdAmount(prompt, tokens*choices, markup); err == nil {
				available = c + r.Int64N(c/2+1)
			}
			want = tokens + logUniform(40)
		}
		if r.IntN(50) == 0 {
			available = math.MaxInt64
		}
		minTokens := 1 + r.Int64N(min(want, 1000))

		// Attempt 0: the whole budget, unclamped.
		_, err := proc.holdAmount(prompt, want*choices, markup)
		if err != nil && !errors.Is(err, pricing.ErrCostOverflow) {
			t.Fatalf("price %+v markup %d: attempt 0 failed with %v, want only overflows", p, markup, err)
		}
		// Later attempts: reserve's clamp.
		budget, ok := clampBudget(p, markup, available, prompt, choices, want, minTokens)
		if !ok {
			continue // the top-up message
		}
		if err != nil {
			unpriced++ // reserve would call holdAmount again, and answer 400 if it failed
		}
		amount, err := proc.holdAmount(prompt, budget*choices, markup)
		if err != nil {
			t.Fatalf("request_too_expensive reached: price %+v markup %d available %d prompt %d choices %d want %d: budget %d: %v",
				p, markup, available, prompt, choices, want, budget, err)
		}
		if amount > available {
			t.Fatalf("price %+v markup %d prompt %d choices %d: budget %d costs %d > available %d",
				p, markup, prompt, choices, budget, amount, available)
		}
		if budget < want {
			clamped++
		}
	}
	// The interesting cases must be there: worst cases beyond int64 that reach the second
	// pricing (the path to request_too_expensive), and clamped budgets.
	if unpriced < cases/20 || clamped < cases/20 {
		t.Errorf("of %d cases, %d could not be priced whole and were priced again, %d were clamped; want ≥ %d of each",
			cases, unpriced, clamped, cases/20)
	}
	t.Logf("%d cases: %d could not be priced whole on attempt 0 and were priced again after the clamp, %d clamped", cases, unpriced, clamped)
}

// TestUnpriceableRequestIsClamped: over the real server, ledger and catalog, a request whose
// worst case is beyond int64 micro-USDC (1,000,000 completion tokens of a model the catalog
// prices at 10^13 USDC per million) never gets 400 request_too_expensive: attempt 0 cannot
// price it and asks the ledger nothing; the clamp then sizes it to what the wallet affords and
// it goes out with that budget, or, when that is below the paywall's minimum, the user gets
// the top-up message and no money is held.
func TestUnpriceableRequestIsClamped(t *testing.T) {
	const (
		rate      = 10_000_000_000_000 // micro-USDC per completion token
		maxTokens = 1_000_000
	)
	dear := price(0, rate)
	// 20 % markup (newRealEnv's paywall): 1,000,000 × 10^13 × 1.2 = 1.2 × 10^19 > MaxInt64.
	if _, err := dear.CostMicro(pricing.Usage{CompletionTokens: maxTokens}, 2000); !errors.Is(err, pricing.ErrCostOverflow) {
		t.Fatalf("the worst case is priced (%v): the test would not reach the clamp", err)
	}
	body := `{"model":"dear","max_tokens":1000000,"stream":true,"messages":[{"role":"user","content":"Hello there"}]}`
	tests := []struct {
		name    string
		balance int64
		budget  int64 // the max_tokens sent upstream; 0: the top-up message
	}{
		// ⌊10^15 / (10^13 × 1.2)⌋ = 83 tokens, held ⌈83 × 1.2 × 10^13⌉ = 9.96 × 10^14.
		{"clamped to what the wallet affords", 1_000_000_000_000_000, 83},
		// ⌊10^14 / 1.2 × 10^13⌋ = 8 tokens, below the paywall's minimum of 10.
		{"top-up message below the minimum", 100_000_000_000_000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRealEnv(t, tt.balance, nil)
			if err := pricing.NewCatalog(e.db.Pool, nil, e.prefix).Import(t.Context(), []pricing.ModelPrice{{Model: "dear", Price: dear}}); err != nil {
				t.Fatal(err)
			}
			_, _, c := e.replica(t, 4)
			res := run(t, c, exchange{key: e.key, user: testUser, body: body,
				chunks: []string{sseChunk("Hi"), usageChunk(11, int(tt.budget)), "data: [DONE]\n\n"}})

			var keys []string
			var held []int64
			rows, err := e.db.Pool.Query(t.Context(), `SELECT idempotency_key, amount FROM ledger_holds ORDER BY created_at`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var k string
				var a int64
				if err := rows.Scan(&k, &a); err != nil {
					t.Fatal(err)
				}
				keys, held = append(keys, k), append(held, a)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			b := e.balance(t)
			if b.HeldMicro != 0 || e.openHolds(t) != 0 {
				t.Errorf("a hold was left open: %+v", b)
			}

			if tt.budget == 0 {
				ir := res.immediate
				if ir == nil {
					t.Fatal("forwarded; want the top-up message")
				}
				if a, _ := header(ir.GetHeaders(), ActionHeader); a != string(ActionTopUp) || ir.GetStatus().GetCode() != 200 {
					t.Fatalf("answer %d %s, want the top-up message", ir.GetStatus().GetCode(), ir.GetBody())
				}
				if len(keys) != 0 || b.PostedMicro != tt.balance {
					t.Errorf("holds %q, balance %+v: money moved for a request that was not served", keys, b)
				}
				return
			}
			if res.immediate != nil {
				t.Fatalf("refused: %d %s", res.immediate.GetStatus().GetCode(), res.immediate.GetBody())
			}
			if sent := sentBody(t, res); sent["max_tokens"] != float64(tt.budget) {
				t.Errorf("max_tokens %v, want the clamped %d", sent["max_tokens"], tt.budget)
			}
			// Attempt 0 could not be priced, so it never reached the ledger: the one hold is
			// attempt 1's, of the clamped budget, within the balance.
			want := tt.budget * rate * 12 / 10
			if len(keys) != 1 || !strings.HasSuffix(keys[0], ":1") || held[0] != want || held[0] > tt.balance {
				t.Errorf("holds %q of %v micro-USDC; want one, attempt 1's, of %d (balance %d)", keys, held, want, tt.balance)
			}
			if caps := e.captures(t); len(caps) != 1 || -caps[0].AmountMicro != want || b.PostedMicro != tt.balance-want {
				t.Errorf("captures %+v, balance %+v; want %d charged", caps, b, want)
			}
		})
	}
}
