package pricing

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func dec(t testing.TB, s string) Decimal {
	t.Helper()
	d, err := ParseDecimal(s)
	if err != nil {
		t.Fatalf("ParseDecimal(%q): %v", s, err)
	}
	return d
}

// Prices shaped like real models (USDC per million tokens).
func miniPrice(t testing.TB) Price { // gpt-4o-mini-like, with a cache-read rate
	return Price{Input: dec(t, "0.15"), Output: dec(t, "0.6"), CachedInput: dec(t, "0.075")}
}

func sonnetPrice(t testing.TB) Price { // claude-sonnet-like: cache reads and writes priced apart
	return Price{Input: dec(t, "3"), Output: dec(t, "15"), CachedInput: dec(t, "0.3"), CacheWrite: dec(t, "3.75")}
}

func TestCostMicro(t *testing.T) {
	mini, sonnet := miniPrice(t), sonnetPrice(t)
	noCache := Price{Input: dec(t, "0.15"), Output: dec(t, "0.6")}
	reasoner := Price{Input: dec(t, "1.1"), Output: dec(t, "4.4")}
	reasonerApart := Price{Input: dec(t, "1.1"), Output: dec(t, "4.4"), Reasoning: dec(t, "5")}
	withFee := Price{Input: dec(t, "0.15"), Output: dec(t, "0.6"), Request: dec(t, "0.001")}
	tiny := Price{Input: dec(t, "0.000001")}

	tests := []struct {
		name     string
		price    Price
		usage    Usage
		markup   int64
		want     int64
		provider int64 // ProviderCostMicro of the same usage
	}{
		{"plain prompt and completion", mini, Usage{PromptTokens: 1000, CompletionTokens: 500}, 0, 450, 450},
		{"10% markup", mini, Usage{PromptTokens: 1000, CompletionTokens: 500}, 1000, 495, 450},
		{"a fraction rounds up", mini, Usage{PromptTokens: 1}, 0, 1, 1},
		{"1.05 rounds up to 2", mini, Usage{PromptTokens: 7}, 0, 2, 2},
		{"an exact amount is not rounded", mini, Usage{PromptTokens: 20}, 0, 3, 3},
		{"markup on an exact amount rounds up", mini, Usage{PromptTokens: 20}, 1000, 4, 3},
		// Rounding twice (price, then markup) would give ⌈⌈0.15⌉ × 1.01⌉ = 2.
		{"rounded once, after the markup", mini, Usage{PromptTokens: 1}, 100, 1, 1},
		{"zero usage costs nothing", mini, Usage{}, 1000, 0, 0},
		{"zero usage pays the request fee", withFee, Usage{}, 0, 1000, 1000},
		{"request fee takes the markup", withFee, Usage{}, 1000, 1100, 1000},
		{"request fee plus tokens", withFee, Usage{PromptTokens: 1000, CompletionTokens: 500}, 0, 1450, 1450},
		{"cached tokens at the cache rate, not twice", mini,
			Usage{PromptTokens: 1000, CachedTokens: 400}, 0, 120, 120}, // 600×0.15 + 400×0.075
		{"cached tokens at the input rate when no cache rate", noCache,
			Usage{PromptTokens: 1000, CachedTokens: 400}, 0, 150, 150},
		{"reasoning inside completion at the output rate", reasoner,
			Usage{CompletionTokens: 1000, ReasoningTokens: 800}, 0, 4400, 4400},
		{"reasoning priced apart", reasonerApart,
			Usage{CompletionTokens: 1000, ReasoningTokens: 800}, 0, 4880, 4880}, // 200×4.4 + 800×5
		{"cache reads, cache writes, output", sonnet,
			Usage{PromptTokens: 10000, CachedTokens: 6000, CacheWriteTokens: 2000, CompletionTokens: 1000}, 0,
			30300, 30300}, // 2000×3 + 6000×0.3 + 2000×3.75 + 1000×15
		{"parts larger than the whole: parts trusted", sonnet,
			Usage{PromptTokens: 100, CachedTokens: 150}, 0, 45, 45},
		{"reasoning larger than completion: reasoning trusted", reasonerApart,
			Usage{CompletionTokens: 10, ReasoningTokens: 20}, 0, 100, 100},
		{"a millionth of a micro-USDC still costs one", tiny, Usage{PromptTokens: 1}, 0, 1, 1},
		{"huge count, exact", mini, Usage{PromptTokens: math.MaxInt64}, 0, 1383505805528216372, 1383505805528216372},
		{"huge count with markup, exact", mini, Usage{PromptTokens: math.MaxInt64}, 1000, 1521856386081038009, 1383505805528216372},
		{"largest markup", mini, Usage{PromptTokens: 1000}, MaxMarkupBps, 15150, 150},
		{"free model", Price{}, Usage{PromptTokens: 1 << 40, CompletionTokens: 1 << 40}, 1000, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.price.CostMicro(tt.usage, tt.markup)
			if err != nil || got != tt.want {
				t.Errorf("CostMicro = %d, %v; want %d", got, err, tt.want)
			}
			if ref := referenceCost(tt.price, tt.usage, tt.markup); ref.Cmp(big.NewInt(got)) != 0 {
				t.Errorf("reference computation gives %s", ref)
			}
			prov, err := tt.price.ProviderCostMicro(tt.usage)
			if err != nil || prov != tt.provider {
				t.Errorf("ProviderCostMicro = %d, %v; want %d", prov, err, tt.provider)
			}
		})
	}
}

func TestCostMicroErrors(t *testing.T) {
	mini := miniPrice(t)
	tests := []struct {
		name   string
		price  Price
		usage  Usage
		markup int64
		want   error
	}{
		{"negative prompt", mini, Usage{PromptTokens: -1}, 0, ErrNegativeUsage},
		{"negative completion", mini, Usage{CompletionTokens: -1}, 0, ErrNegativeUsage},
		{"negative cached", mini, Usage{CachedTokens: -1}, 0, ErrNegativeUsage},
		{"negative cache write", mini, Usage{CacheWriteTokens: -1}, 0, ErrNegativeUsage},
		{"negative reasoning", mini, Usage{ReasoningTokens: -5}, 0, ErrNegativeUsage},
		{"negative markup", mini, Usage{PromptTokens: 1}, -1, ErrBadMarkup},
		{"markup too large", mini, Usage{PromptTokens: 1}, MaxMarkupBps + 1, ErrBadMarkup},
		{"negative price", Price{Input: dec(t, "-1")}, Usage{PromptTokens: 1}, 0, ErrBadPrice},
		{"overflow", Price{Input: dec(t, "15")}, Usage{PromptTokens: math.MaxInt64}, 0, ErrCostOverflow},
		{"overflow only through the markup", mini, Usage{PromptTokens: math.MaxInt64}, MaxMarkupBps, ErrCostOverflow},
		{"overflow across many kinds", Price{Input: dec(t, "1"), Output: dec(t, "1")},
			Usage{PromptTokens: math.MaxInt64, CompletionTokens: math.MaxInt64}, 0, ErrCostOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.price.CostMicro(tt.usage, tt.markup)
			if !errors.Is(err, tt.want) || got != 0 {
				t.Errorf("CostMicro = %d, %v; want 0, %v", got, err, tt.want)
			}
		})
	}
}

// referenceCost recomputes a cost with big.Rat straight from the documented rule, as an
// independent check of the integer arithmetic.
func referenceCost(p Price, u Usage, markupBps int64) *big.Int {
	in, cached, write, out, reasoning := p.rates()
	uncached := max(u.PromptTokens-u.CachedTokens-u.CacheWriteTokens, 0)
	if u.CachedTokens+u.CacheWriteTokens > u.PromptTokens { // overflow-free for the test values
		uncached = 0
	}
	plain := max(u.CompletionTokens-u.ReasoningTokens, 0)
	sum := new(big.Rat)
	add := func(n int64, d Decimal) {
		sum.Add(sum, new(big.Rat).Mul(new(big.Rat).SetInt64(n), d.rat()))
	}
	add(uncached, in)
	add(u.CachedTokens, cached)
	add(u.CacheWriteTokens, write)
	add(plain, out)
	add(u.ReasoningTokens, reasoning)
	add(1_000_000, p.Request)
	sum.Mul(sum, big.NewRat(10000+markupBps, 10000))
	q, r := new(big.Int).QuoRem(sum.Num(), sum.Denom(), new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return q
}

// randomPrice returns a price with up to 9 decimal places per rate, as real catalogs have.
func randomPrice(r *rand.Rand) Price {
	rate := func() Decimal {
		if r.IntN(5) == 0 {
			return Decimal{}
		}
		return NewDecimal(r.Int64N(100_000_000), -int32(r.IntN(10)))
	}
	return Price{Input: rate(), Output: rate(), CachedInput: rate(), CacheWrite: rate(), Reasoning: rate(),
		Request: NewDecimal(r.Int64N(1000), -int32(r.IntN(7)))}
}

func randomUsage(r *rand.Rand) Usage {
	n := func() int64 { return r.Int64N(1 << uint(r.IntN(24))) }
	return Usage{PromptTokens: n(), CompletionTokens: n(), CachedTokens: n(), CacheWriteTokens: n(), ReasoningTokens: n()}
}

func TestCostMicroMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		p, u, m := randomPrice(r), randomUsage(r), r.Int64N(20000)
		got, err := p.CostMicro(u, m)
		if err != nil {
			t.Fatalf("CostMicro(%+v, %+v, %d): %v", p, u, m, err)
		}
		if want := referenceCost(p, u, m); want.Cmp(big.NewInt(got)) != 0 {
			t.Fatalf("CostMicro(%v, %+v, %d) = %d, reference %s", p, u, m, got, want)
		}
	}
}

func TestAffordableTokens(t *testing.T) {
	mini := miniPrice(t)
	tests := []struct {
		name      string
		price     Price
		markup    int64
		available int64
		prompt    int64
		want      int64
	}{
		{"what is left after the prompt", mini, 0, 450, 1000, 500},
		{"the markup shrinks the budget", mini, 1000, 495, 1000, 500},
		{"rounding up is accounted for", mini, 0, 1, 0, 1}, // ⌈0.6⌉ = 1, ⌈1.2⌉ = 2
		{"prompt alone unaffordable", mini, 0, 100, 1000, 0},
		{"nothing available", mini, 0, 0, 10, 0},
		{"request fee comes first", Price{Output: dec(t, "1"), Request: dec(t, "0.0001")}, 0, 150, 0, 50},
		{"free completion is unbounded", Price{Input: dec(t, "1")}, 0, 10, 10, math.MaxInt64},
		{"dearer reasoning rate bounds the budget", Price{Output: dec(t, "1"), Reasoning: dec(t, "2")}, 0, 100, 0, 50},
		{"huge balance saturates", Price{Output: dec(t, "0.000001")}, 0, math.MaxInt64, 0, math.MaxInt64},
		{"negative balance", mini, 0, -5, 0, 0},
		{"negative prompt", mini, 0, 100, -1, 0},
		{"bad markup", mini, -1, 100, 0, 0},
		{"bad price", Price{Output: dec(t, "-1")}, 0, 100, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AffordableTokens(tt.price, tt.markup, tt.available, tt.prompt); got != tt.want {
				t.Errorf("AffordableTokens = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestAffordableTokensIsTheLargestBudget checks the clamp's defining property: the budget it
// returns is affordable and one token more is not, whatever the completion turns out to be
// made of.
func TestAffordableTokensIsTheLargestBudget(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		p, m := randomPrice(r), r.Int64N(20000)
		prompt, avail := r.Int64N(100_000), r.Int64N(10_000_000)
		n := AffordableTokens(p, m, avail, prompt)
		if n == math.MaxInt64 {
			continue
		}
		worst := func(k int64) int64 {
			// All reasoning or all output, whichever is dearer.
			a, errA := p.CostMicro(Usage{PromptTokens: prompt, CompletionTokens: k}, m)
			b, errB := p.CostMicro(Usage{PromptTokens: prompt, CompletionTokens: k, ReasoningTokens: k}, m)
			if errA != nil || errB != nil {
				t.Fatalf("CostMicro: %v %v", errA, errB)
			}
			return max(a, b)
		}
		if n > 0 && worst(n) > avail {
			t.Fatalf("price %v markup %d prompt %d: budget %d costs %d > available %d", p, m, prompt, n, worst(n), avail)
		}
		if worst(0) <= avail && worst(n+1) <= avail {
			t.Fatalf("price %v markup %d prompt %d: budget %d is not the largest (%d costs %d ≤ %d)", p, m, prompt, n, n+1, worst(n+1), avail)
		}
	}
}

// costPaths returns both paths' answers for a price and usage.
func costPaths(t testing.TB, p Price, u Usage, m int64) (fast int64, fastOK bool, slow int64, slowErr error) {
	t.Helper()
	terms, err := p.terms(u)
	if err != nil {
		t.Fatal(err)
	}
	e0 := minExp(terms[:])
	fast, fastOK = costFast(terms[:], e0, m)
	slow, slowErr = costBig(terms[:], e0, m)
	return
}

// TestCostFastPathMatchesBig: the allocation-free path gives the big.Int path's answer
// whenever it answers, including near the edges of 64 bits.
func TestCostFastPathMatchesBig(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	answered := 0
	for i := range 20000 {
		p, u, m := randomPrice(r), randomUsage(r), r.Int64N(MaxMarkupBps+1)
		if i%3 == 0 { // huge counts and rates
			u.PromptTokens = r.Int64()
			u.CompletionTokens = r.Int64() >> uint(r.IntN(63))
			p.Input = NewDecimal(r.Int64(), -int32(r.IntN(20)))
		}
		fast, ok, slow, err := costPaths(t, p, u, m)
		if !ok {
			continue
		}
		answered++
		if err != nil || fast != slow {
			t.Fatalf("price %v usage %+v markup %d: fast %d, big %d (%v)", p, u, m, fast, slow, err)
		}
	}
	if answered < 10000 {
		t.Errorf("the fast path answered only %d of 20000", answered)
	}
}

// FuzzCostPaths: the two paths agree on any counts, rates and markup.
func FuzzCostPaths(f *testing.F) {
	f.Add(int64(1000), int64(500), int64(150), int32(-3), int64(600), int32(-3), int64(1000))
	f.Add(int64(math.MaxInt64), int64(0), int64(15), int32(-2), int64(0), int32(0), int64(0))
	f.Add(int64(1), int64(1), int64(1), int32(-15), int64(1), int32(-16), int64(MaxMarkupBps))
	f.Fuzz(func(t *testing.T, prompt, completion, inCoef int64, inExp int32, outCoef int64, outExp int32, m int64) {
		if prompt < 0 || completion < 0 || inCoef < 0 || outCoef < 0 || m < 0 || m > MaxMarkupBps ||
			inExp < -40 || inExp > 40 || outExp < -40 || outExp > 40 {
			return
		}
		p := Price{Input: NewDecimal(inCoef, inExp), Output: NewDecimal(outCoef, outExp)}
		fast, ok, slow, err := costPaths(t, p, Usage{PromptTokens: prompt, CompletionTokens: completion}, m)
		if ok && (err != nil || fast != slow) {
			t.Fatalf("fast %d, big %d (%v)", fast, slow, err)
		}
	})
}

// TestAffordableFastPathMatchesBig: the allocation-free clamp gives the big.Int answer
// whenever it answers.
func TestAffordableFastPathMatchesBig(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	answered := 0
	for i := range 20000 {
		p, m := randomPrice(r), r.Int64N(MaxMarkupBps+1)
		prompt, avail := r.Int64N(1_000_000), r.Int64N(1<<40)
		if i%3 == 0 {
			prompt, avail = r.Int64(), r.Int64()
			p.Output = NewDecimal(r.Int64N(1000), -int32(r.IntN(18)))
		}
		fixed, perToken := p.affordTerms(prompt)
		e0 := minExp([]term{fixed[0], fixed[1], perToken})
		k := uint64(10000 + m)
		fast, ok := affordableFast(fixed[:], perToken, e0, k, avail)
		if !ok {
			continue
		}
		answered++
		if slow := affordableBig(fixed[:], perToken, e0, k, avail); fast != slow {
			t.Fatalf("price %v markup %d prompt %d available %d: fast %d, big %d", p, m, prompt, avail, fast, slow)
		}
	}
	if answered < 10000 {
		t.Errorf("the fast path answered only %d of 20000", answered)
	}
}
