package pricing

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
)

// Errors of the cost math. Methods document which they can return.
var (
	// ErrNegativeUsage: a token count is negative.
	ErrNegativeUsage = errors.New("pricing: negative token count")
	// ErrBadMarkup: a markup outside 0…MaxMarkupBps basis points.
	ErrBadMarkup = errors.New("pricing: markup out of range")
	// ErrBadPrice: a price is negative.
	ErrBadPrice = errors.New("pricing: bad price")
	// ErrCostOverflow: the cost does not fit in int64 micro-USDC (about 9.2 trillion USDC).
	ErrCostOverflow = errors.New("pricing: cost exceeds the int64 micro-USDC range")
)

// MaxMarkupBps bounds a markup: 1,000,000 basis points is +10,000 %, a price 101 times the
// model's. Anything above is a typo, not a business.
const MaxMarkupBps = 1_000_000

// bpsDenom is 100 % in basis points.
const bpsDenom = 10_000

// Price is one model's price: USDC per million tokens for each kind of token (which is the same
// number as micro-USDC per token), and USDC per request for Request.
//
// A rate left unset (the zero Decimal) falls back: CachedInput and CacheWrite to Input,
// Reasoning to Output. So a model priced with Input and Output alone charges every prompt token
// at Input and every completion token at Output. An explicit zero means free.
type Price struct {
	Input       Decimal // per 1M uncached prompt tokens; unset: 0
	Output      Decimal // per 1M completion tokens that are not reasoning tokens; unset: 0
	CachedInput Decimal // per 1M prompt tokens read from the provider's cache; unset: Input
	CacheWrite  Decimal // per 1M prompt tokens written to the provider's cache; unset: Input
	Reasoning   Decimal // per 1M reasoning tokens; unset: Output
	Request     Decimal // per request, whatever its tokens; unset: 0
}

// Usage is what a request consumed, in the shape OpenAI and OpenRouter report it:
//
//	PromptTokens     = usage.prompt_tokens       (INCLUDES the cached and cache-write tokens)
//	CachedTokens     = usage.prompt_tokens_details.cached_tokens
//	CacheWriteTokens = usage.prompt_tokens_details.cache_write_tokens
//	CompletionTokens = usage.completion_tokens   (INCLUDES the reasoning tokens)
//	ReasoningTokens  = usage.completion_tokens_details.reasoning_tokens
//
// So each token is charged once: PromptTokens − CachedTokens − CacheWriteTokens at Input, the
// cached ones at CachedInput, the written ones at CacheWrite; CompletionTokens −
// ReasoningTokens at Output and the reasoning ones at Reasoning. When a provider reports parts
// larger than their whole (cached + written > prompt), the parts are trusted and the rest is
// zero: a token is never charged twice and a reported part is never dropped.
type Usage struct {
	PromptTokens, CompletionTokens, CachedTokens, CacheWriteTokens, ReasoningTokens int64
}

// Validate reports a negative rate.
// It can return: ErrBadPrice.
func (p Price) Validate() error {
	for _, f := range p.fields() {
		if f.d.Sign() < 0 {
			return fmt.Errorf("%w: %s is negative (%s)", ErrBadPrice, f.name, f.d)
		}
	}
	return nil
}

// Equal reports whether two prices have the same rates. Input, Output and Request compare
// by value (unset is 0); the fallback rates must also be set alike, since an unset one
// follows its base rate.
func (p Price) Equal(q Price) bool {
	a, b := p.fields(), q.fields()
	for i := range a {
		if a[i].d.Cmp(b[i].d) != 0 {
			return false
		}
	}
	return p.CachedInput.IsSet() == q.CachedInput.IsSet() && p.CacheWrite.IsSet() == q.CacheWrite.IsSet() &&
		p.Reasoning.IsSet() == q.Reasoning.IsSet()
}

type namedRate struct {
	name string
	d    Decimal
}

func (p Price) fields() [6]namedRate {
	return [6]namedRate{
		{"input", p.Input}, {"output", p.Output}, {"cached_input", p.CachedInput},
		{"cache_write", p.CacheWrite}, {"reasoning", p.Reasoning}, {"request", p.Request},
	}
}

// rates returns the effective rate of each kind of token, fallbacks applied.
func (p Price) rates() (in, cached, write, out, reasoning Decimal) {
	in, out = p.Input, p.Output
	cached, write, reasoning = p.CachedInput, p.CacheWrite, p.Reasoning
	if !cached.IsSet() {
		cached = in
	}
	if !write.IsSet() {
		write = in
	}
	if !reasoning.IsSet() {
		reasoning = out
	}
	return
}

// counts splits a usage into the tokens charged at each rate (see Usage).
func (u Usage) counts() (uncached, cached, written, plainOut, reasoning int64, err error) {
	if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.CachedTokens < 0 ||
		u.CacheWriteTokens < 0 || u.ReasoningTokens < 0 {
		return 0, 0, 0, 0, 0, fmt.Errorf("%w: %+v", ErrNegativeUsage, u)
	}
	uncached = u.PromptTokens - u.CachedTokens
	if uncached < 0 || uncached < u.CacheWriteTokens {
		uncached = 0
	} else {
		uncached -= u.CacheWriteTokens
	}
	plainOut = max(u.CompletionTokens-u.ReasoningTokens, 0)
	return uncached, u.CachedTokens, u.CacheWriteTokens, plainOut, u.ReasoningTokens, nil
}

// CostMicro is what the user pays for a request: the exact price of its usage plus the markup,
// rounded up to a whole micro-USDC once, at the end. Zero usage costs the request fee alone.
// It can return: ErrNegativeUsage, ErrBadMarkup, ErrBadPrice, ErrCostOverflow.
func (p Price) CostMicro(u Usage, markupBps int64) (int64, error) {
	if markupBps < 0 || markupBps > MaxMarkupBps {
		return 0, fmt.Errorf("%w: %d bps, want 0…%d", ErrBadMarkup, markupBps, MaxMarkupBps)
	}
	return p.cost(u, markupBps)
}

// ProviderCostMicro is the price of a request's usage without markup, rounded up: what the
// built-in provider is owed for it.
// It can return: ErrNegativeUsage, ErrBadPrice, ErrCostOverflow.
func (p Price) ProviderCostMicro(u Usage) (int64, error) { return p.cost(u, 0) }

// term is tokens × rate, with the rate as coef × 10^exp micro-USDC per token.
type term struct {
	tokens int64
	rate   Decimal
}

func (p Price) cost(u Usage, markupBps int64) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	terms, err := p.terms(u)
	if err != nil {
		return 0, err
	}
	e0 := minExp(terms[:])
	if micro, ok := costFast(terms[:], e0, markupBps); ok {
		return micro, nil
	}
	return costBig(terms[:], e0, markupBps)
}

// terms splits a usage into what each kind of token costs, fallback rates applied, plus the
// request fee.
// It can return: ErrNegativeUsage.
func (p Price) terms(u Usage) ([6]term, error) {
	uncached, cached, written, plainOut, reasoning, err := u.counts()
	if err != nil {
		return [6]term{}, err
	}
	in, cachedRate, writeRate, out, reasoningRate := p.rates()
	return [6]term{
		{uncached, in}, {cached, cachedRate}, {written, writeRate},
		{plainOut, out}, {reasoning, reasoningRate},
		{1, p.Request.Shift(6)}, // USDC per request = 10^6 micro-USDC per request
	}, nil
}

// costBig is the cost rule in arbitrary precision:
// micro = ⌈N × 10^e0 × (10000 + markup) / 10000⌉ with Σ tokens × rate = N × 10^e0, e0 ≤ 0.
func costBig(terms []term, e0 int32, markupBps int64) (int64, error) {
	num := scaledSum(terms, e0)
	num.Mul(num, big.NewInt(bpsDenom+markupBps))
	return ceilDiv(num, pow10(4-int64(e0)))
}

// pow10u are the powers of ten that fit in a uint64.
var pow10u = func() (p [20]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// costFast computes costBig's result in 128-bit integer arithmetic, without allocating. It
// reports false whenever a step would not fit (huge counts or rates, or more than 15 decimal
// places), and the caller then takes the exact big.Int path; it never rounds differently.
func costFast(terms []term, e0 int32, markupBps int64) (int64, bool) {
	if 4-int64(e0) >= int64(len(pow10u)) {
		return 0, false
	}
	hi, lo, ok := sum128(terms, e0)
	if !ok {
		return 0, false
	}
	// × (10000 + markup), which must still fit in 128 bits.
	hi, lo, ok = mul128(hi, lo, uint64(bpsDenom+markupBps)) //nolint:gosec // markup checked: 0…MaxMarkupBps
	if !ok {
		return 0, false
	}
	// ÷ 10^(4−e0), rounding up.
	d := pow10u[4-e0]
	if hi >= d {
		return 0, false // the quotient needs more than 64 bits
	}
	q, r := bits.Div64(hi, lo, d)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 || q == 0 && r != 0 {
		return 0, false
	}
	return int64(q), true
}

// sum128 returns Σ tokens × rate as a 128-bit numerator over 10^e0 (see scaledSum), or false
// when a rate or a product does not fit.
func sum128(terms []term, e0 int32) (hi, lo uint64, ok bool) {
	for _, t := range terms {
		c := t.rate.coef
		if t.tokens == 0 || c == nil {
			continue
		}
		shift := t.rate.exp - e0
		if !c.IsUint64() || int(shift) >= len(pow10u) {
			return 0, 0, false
		}
		sh, scaled := bits.Mul64(c.Uint64(), pow10u[shift])
		if sh != 0 {
			return 0, 0, false
		}
		ph, pl := bits.Mul64(uint64(t.tokens), scaled) //nolint:gosec // counts checked non-negative
		var carry uint64
		lo, carry = bits.Add64(lo, pl, 0)
		hi, carry = bits.Add64(hi, ph, carry)
		if carry != 0 {
			return 0, 0, false
		}
	}
	return hi, lo, true
}

// mul128 returns (hi, lo) × k, or false when the product needs more than 128 bits.
func mul128(hi, lo, k uint64) (uint64, uint64, bool) {
	h1, l1 := bits.Mul64(hi, k)
	h2, l2 := bits.Mul64(lo, k)
	mid, carry := bits.Add64(l1, h2, 0)
	return mid, l2, h1 == 0 && carry == 0
}

// minExp returns the smallest exponent among the terms that count, and at most 0, so that
// every term is an integer multiple of 10^minExp micro-USDC.
func minExp(terms []term) int32 {
	var e0 int32
	for _, t := range terms {
		if t.tokens != 0 && t.rate.coef != nil && t.rate.exp < e0 {
			e0 = t.rate.exp
		}
	}
	return e0
}

// ceilDiv returns ⌈n / d⌉ for n ≥ 0, d > 0, or ErrCostOverflow when it exceeds int64.
func ceilDiv(n, d *big.Int) (int64, error) {
	var q, r big.Int
	q.QuoRem(n, d, &r)
	if r.Sign() > 0 {
		q.Add(&q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("%w: %s micro-USDC", ErrCostOverflow, q.String())
	}
	return q.Int64(), nil
}

// AffordableTokens is the largest completion budget n such that a request with promptTokens of
// prompt and n completion tokens costs at most availableMicro (CostMicro with markupBps), every
// completion token priced at the dearer of Output and Reasoning because a budget cannot say how
// many will be reasoning. The prompt is priced as uncached Input, which is what an estimate
// before the request can know.
//
// It returns 0 when even the prompt is unaffordable, math.MaxInt64 when completion tokens are
// free, and 0 — "cannot afford" — for invalid arguments (negative counts, a bad markup or
// price), so a mistake can only lead to a top-up message, never to an unbounded request.
func AffordableTokens(p Price, markupBps, availableMicro, promptTokens int64) int64 {
	if markupBps < 0 || markupBps > MaxMarkupBps || availableMicro < 0 || promptTokens < 0 ||
		p.Validate() != nil {
		return 0
	}
	fixed, perToken := p.affordTerms(promptTokens)
	all := [3]term{fixed[0], fixed[1], perToken}
	e0 := minExp(all[:])
	// Using the common exponent e0 of all three: cost(n) ≤ A ⟺
	// (F + n·R) × (10000+m) ≤ A × 10^(4−e0), with F, R the fixed and per-token numerators.
	k := uint64(bpsDenom + markupBps)
	if n, ok := affordableFast(fixed[:], perToken, e0, k, availableMicro); ok {
		return n
	}
	return affordableBig(fixed[:], perToken, e0, k, availableMicro)
}

// affordTerms are what AffordableTokens weighs: the fixed cost of a request (the prompt at
// the uncached Input rate, the request fee) and one completion token at the dearer of Output
// and Reasoning.
func (p Price) affordTerms(promptTokens int64) (fixed [2]term, perToken term) {
	in, _, _, out, reasoning := p.rates()
	rate := out
	if reasoning.Cmp(out) > 0 {
		rate = reasoning
	}
	return [2]term{{promptTokens, in}, {1, p.Request.Shift(6)}}, term{1, rate}
}

// affordableBig is AffordableTokens' arithmetic in arbitrary precision.
func affordableBig(fixed []term, perToken term, e0 int32, k uint64, availableMicro int64) int64 {
	f := scaledSum(fixed, e0)
	r := scaledSum([]term{perToken}, e0)
	kb := new(big.Int).SetUint64(k)
	budget := new(big.Int).Mul(big.NewInt(availableMicro), pow10(4-int64(e0)))
	budget.Sub(budget, f.Mul(f, kb))
	if budget.Sign() < 0 {
		return 0
	}
	if r.Sign() == 0 {
		return math.MaxInt64
	}
	n := budget.Quo(budget, r.Mul(r, kb)) // floor: both are non-negative
	if !n.IsInt64() {
		return math.MaxInt64
	}
	return n.Int64()
}

// affordableFast is AffordableTokens' arithmetic in 128 bits, without allocating; false
// sends the caller to the big.Int path.
func affordableFast(fixed []term, perToken term, e0 int32, k uint64, availableMicro int64) (int64, bool) {
	if 4-int64(e0) >= int64(len(pow10u)) {
		return 0, false
	}
	fh, fl, ok := sum128(fixed, e0)
	if !ok {
		return 0, false
	}
	if fh, fl, ok = mul128(fh, fl, k); !ok {
		return 0, false
	}
	ah, al := bits.Mul64(uint64(availableMicro), pow10u[4-e0]) //nolint:gosec // checked non-negative
	if ah < fh || ah == fh && al < fl {
		return 0, true // even the prompt is unaffordable
	}
	bl, borrow := bits.Sub64(al, fl, 0)
	bh, _ := bits.Sub64(ah, fh, borrow)
	rh, rl, ok := sum128([]term{perToken}, e0)
	if !ok {
		return 0, false
	}
	if rh, rl, ok = mul128(rh, rl, k); !ok || rh != 0 {
		return 0, false
	}
	if rl == 0 {
		return math.MaxInt64, true
	}
	if bh >= rl {
		return math.MaxInt64, true // the quotient exceeds 64 bits: saturate
	}
	q, _ := bits.Div64(bh, bl, rl)
	if q > math.MaxInt64 {
		return math.MaxInt64, true
	}
	return int64(q), true
}

// scaledSum returns N with Σ tokens × rate = N × 10^e0 exactly, for an e0 at or below the
// exponent of every term that counts.
func scaledSum(terms []term, e0 int32) *big.Int {
	num := new(big.Int)
	var x big.Int
	for _, t := range terms {
		if t.tokens == 0 || t.rate.coef == nil {
			continue
		}
		x.SetInt64(t.tokens)
		x.Mul(&x, t.rate.coef)
		if d := t.rate.exp - e0; d > 0 {
			x.Mul(&x, pow10(int64(d)))
		}
		num.Add(num, &x)
	}
	return num
}
