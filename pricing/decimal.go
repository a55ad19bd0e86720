package pricing

import (
	"cmp"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"strings"
)

// ErrBadDecimal wraps every decimal string ParseDecimal refuses.
var ErrBadDecimal = errors.New("pricing: bad decimal")

// Limits on what ParseDecimal accepts. A price is data from outside (a models file, an admin's
// command line): without bounds, "1e999999999" would ask for a billion-digit number.
const (
	maxDecimalLen    = 64 // characters of the whole string
	maxDecimalDigits = 40 // significant digits of the coefficient
	maxDecimalExp    = 40 // |exponent| after normalisation
)

// Decimal is an exact decimal number, coef × 10^exp. It is immutable: every operation returns a
// new value, so copies can be shared freely. The zero value is "unset", which a Price reads as a
// fallback to another rate (see Price); an explicit zero is a set Decimal whose value is 0.
type Decimal struct {
	coef *big.Int // nil means 0; never mutated after construction
	exp  int32
	set  bool
}

// NewDecimal returns coef × 10^exp, for constants in code and tests: NewDecimal(15, -2) is 0.15.
func NewDecimal(coef int64, exp int32) Decimal {
	return normalize(big.NewInt(coef), exp)
}

// normalize strips trailing zeros from the coefficient so that equal values have one
// representation (Equal and the database round trip rely on it).
func normalize(c *big.Int, exp int32) Decimal {
	if c.Sign() == 0 {
		return Decimal{set: true}
	}
	ten := big.NewInt(10)
	var q, r big.Int
	for {
		q.QuoRem(c, ten, &r)
		if r.Sign() != 0 {
			break
		}
		c.Set(&q)
		exp++
	}
	return Decimal{coef: c, exp: exp, set: true}
}

// ParseDecimal reads a decimal string such as "0.15", "3", "-2.5" or "1.5e-7" (the form a
// JavaScript number prints as). It accepts no spaces, no thousands separators, no "NaN" or
// "Inf", at most 40 significant digits and exponents within ±40.
// It can return: ErrBadDecimal (wrapped with what is wrong).
func ParseDecimal(s string) (Decimal, error) {
	if s == "" {
		return Decimal{}, fmt.Errorf("%w: empty string", ErrBadDecimal)
	}
	if len(s) > maxDecimalLen {
		return Decimal{}, fmt.Errorf("%w: %d characters, at most %d", ErrBadDecimal, len(s), maxDecimalLen)
	}
	rest := s
	neg := false
	switch rest[0] {
	case '-':
		neg = true
		rest = rest[1:]
	case '+':
		rest = rest[1:]
	}
	mant, expPart, hasExp := strings.Cut(rest, "e")
	if !hasExp {
		mant, expPart, hasExp = strings.Cut(rest, "E")
	}
	intPart, fracPart, hasPoint := strings.Cut(mant, ".")
	if intPart == "" && fracPart == "" {
		return Decimal{}, fmt.Errorf("%w: %q has no digits", ErrBadDecimal, s)
	}
	if hasPoint && (intPart == "" || fracPart == "") {
		return Decimal{}, fmt.Errorf("%w: %q needs digits on both sides of the point", ErrBadDecimal, s)
	}
	digits := intPart + fracPart
	if !allDigits(digits) {
		return Decimal{}, fmt.Errorf("%w: %q is not a decimal number", ErrBadDecimal, s)
	}
	exp := -int64(len(fracPart))
	if hasExp {
		e, err := parseExponent(expPart)
		if err != nil {
			return Decimal{}, fmt.Errorf("%w: %q: %w", ErrBadDecimal, s, err)
		}
		exp += e
	}
	digits = strings.TrimLeft(digits, "0")
	if digits == "" {
		return Decimal{set: true}, nil
	}
	// Trailing zeros move into the exponent before the checks, so "1000e37" is as
	// acceptable as "1e40".
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	if len(trimmed) > maxDecimalDigits {
		return Decimal{}, fmt.Errorf("%w: %q has more than %d significant digits", ErrBadDecimal, s, maxDecimalDigits)
	}
	if exp > maxDecimalExp || exp < -maxDecimalExp {
		return Decimal{}, fmt.Errorf("%w: %q is out of range (exponent beyond ±%d)", ErrBadDecimal, s, maxDecimalExp)
	}
	c, ok := new(big.Int).SetString(trimmed, 10)
	if !ok { // unreachable: trimmed is all digits
		return Decimal{}, fmt.Errorf("%w: %q", ErrBadDecimal, s)
	}
	if neg {
		c.Neg(c)
	}
	return Decimal{coef: c, exp: int32(exp), set: true}, nil
}

// parseExponent reads the part after 'e': an optional sign and at most 4 digits (the range is
// checked later, once trailing zeros are folded in).
func parseExponent(s string) (int64, error) {
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" || len(s) > 4 {
		return 0, errors.New("bad exponent")
	}
	var e int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("bad exponent")
		}
		e = e*10 + int64(s[i]-'0')
	}
	if neg {
		e = -e
	}
	return e, nil
}

// IsSet reports whether d holds a value (possibly zero), as opposed to the zero Decimal.
func (d Decimal) IsSet() bool { return d.set }

// Sign returns -1, 0 or +1. An unset Decimal is 0.
func (d Decimal) Sign() int {
	if d.coef == nil {
		return 0
	}
	return d.coef.Sign()
}

// Equal reports whether d and e are set alike and hold the same value.
func (d Decimal) Equal(e Decimal) bool {
	return d.set == e.set && d.Cmp(e) == 0
}

// Cmp compares the values of d and e (unset counts as 0): -1, 0 or +1.
func (d Decimal) Cmp(e Decimal) int {
	if c, ok := d.cmpFast(e); ok {
		return c
	}
	return d.rat().Cmp(e.rat())
}

// cmpFast compares two non-negative decimals whose coefficients fit a uint64 by aligning
// their exponents in 128 bits, without allocating (the clamp and the hold compare rates on
// every request). It reports false when it cannot.
func (d Decimal) cmpFast(e Decimal) (int, bool) {
	if d.Sign() < 0 || e.Sign() < 0 {
		return 0, false
	}
	switch {
	case d.coef == nil && e.coef == nil:
		return 0, true
	case d.coef == nil:
		return -1, true
	case e.coef == nil:
		return 1, true
	case !d.coef.IsUint64() || !e.coef.IsUint64():
		return 0, false
	}
	lowest := min(d.exp, e.exp)
	ds, es := d.exp-lowest, e.exp-lowest
	if int(ds) >= len(pow10u) || int(es) >= len(pow10u) {
		return 0, false
	}
	dh, dl := bits.Mul64(d.coef.Uint64(), pow10u[ds])
	eh, el := bits.Mul64(e.coef.Uint64(), pow10u[es])
	if dh != eh {
		return cmp.Compare(dh, eh), true
	}
	return cmp.Compare(dl, el), true
}

// rat returns the exact value as a big.Rat.
func (d Decimal) rat() *big.Rat {
	r := new(big.Rat)
	if d.coef == nil {
		return r
	}
	r.SetInt(d.coef)
	if d.exp > 0 {
		r.Mul(r, new(big.Rat).SetInt(pow10(int64(d.exp))))
	} else if d.exp < 0 {
		r.Quo(r, new(big.Rat).SetInt(pow10(-int64(d.exp))))
	}
	return r
}

// Shift returns d × 10^n (for converting per-token prices to per-million ones).
func (d Decimal) Shift(n int32) Decimal {
	if d.coef == nil {
		return d
	}
	return Decimal{coef: d.coef, exp: d.exp + n, set: true}
}

// String returns the exact value in plain notation ("0.00015", "1200"); "" when unset.
func (d Decimal) String() string {
	if !d.set {
		return ""
	}
	if d.coef == nil {
		return "0"
	}
	digits := new(big.Int).Abs(d.coef).String()
	sign := ""
	if d.coef.Sign() < 0 {
		sign = "-"
	}
	switch {
	case d.exp >= 0:
		return sign + digits + strings.Repeat("0", int(d.exp))
	case int(-d.exp) < len(digits):
		p := len(digits) + int(d.exp)
		return sign + digits[:p] + "." + digits[p:]
	default:
		return sign + "0." + strings.Repeat("0", int(-d.exp)-len(digits)) + digits
	}
}

// MarshalText encodes d as its exact decimal string, so JSON carries prices as strings.
func (d Decimal) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a decimal string; "" leaves d unset.
func (d *Decimal) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*d = Decimal{}
		return nil
	}
	v, err := ParseDecimal(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// pow10 returns 10^n for n ≥ 0.
func pow10(n int64) *big.Int {
	return new(big.Int).Exp(big.NewInt(10), big.NewInt(n), nil)
}

// mul returns d × e exactly (set when either is).
func (d Decimal) mul(e Decimal) Decimal {
	if d.coef == nil || e.coef == nil {
		return Decimal{set: d.set || e.set}
	}
	return normalize(new(big.Int).Mul(d.coef, e.coef), d.exp+e.exp)
}

// sub returns d − e exactly (set when either is).
func (d Decimal) sub(e Decimal) Decimal {
	a, b := d.coefOrZero(), e.coefOrZero()
	exp := min(d.exp, e.exp)
	x := new(big.Int).Mul(a, pow10(int64(d.exp-exp)))
	y := new(big.Int).Mul(b, pow10(int64(e.exp-exp)))
	r := normalize(x.Sub(x, y), exp)
	r.set = d.set || e.set
	return r
}

func (d Decimal) coefOrZero() *big.Int {
	if d.coef == nil {
		return new(big.Int)
	}
	return d.coef
}
