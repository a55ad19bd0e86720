package pricing

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrBadAmount means a USDC amount string that is not a non-negative decimal with at most 6
// places within the int64 micro-USDC range.
var ErrBadAmount = errors.New("pricing: bad USDC amount")

// MicroPerUSDC is the number of micro-USDC in one USDC (USDC has 6 decimals).
const MicroPerUSDC = 1_000_000

// FormatUSDC writes micro-USDC as a decimal USDC string with at least two places and no
// trailing zeros beyond them: 420000 → "0.42", 1234567 → "1.234567", 5000000 → "5.00".
func FormatUSDC(micro int64) string {
	sign := ""
	whole, frac := micro/MicroPerUSDC, micro%MicroPerUSDC
	if micro < 0 {
		// Negate the parts, not micro: −math.MinInt64 does not exist, −its quotient does.
		sign, whole, frac = "-", -whole, -frac
	}
	f := fmt.Sprintf("%06d", frac)
	f = strings.TrimRight(f, "0")
	for len(f) < 2 {
		f += "0"
	}
	return sign + strconv.FormatInt(whole, 10) + "." + f
}

// ParseUSDC reads a USDC amount such as "10", "0.5" or "1.234567" into micro-USDC: digits,
// at most one point, at most 6 places, no sign, no exponent, no spaces.
// It can return: ErrBadAmount (wrapped with what is wrong).
func ParseUSDC(s string) (int64, error) {
	whole, frac, hasPoint := strings.Cut(s, ".")
	switch {
	case s == "":
		return 0, fmt.Errorf("%w: empty; write an amount such as \"5\" or \"2.50\"", ErrBadAmount)
	case whole == "" || hasPoint && frac == "":
		return 0, fmt.Errorf("%w: %q needs digits on both sides of the point", ErrBadAmount, s)
	case len(frac) > 6:
		return 0, fmt.Errorf("%w: %q has %d decimal places; USDC has 6", ErrBadAmount, s, len(frac))
	case !allDigits(whole) || !allDigits(frac):
		return 0, fmt.Errorf("%w: %q is not a plain decimal number", ErrBadAmount, s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > math.MaxInt64/MicroPerUSDC {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadAmount, s)
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	micro := w*MicroPerUSDC + f
	if micro < 0 {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadAmount, s)
	}
	return micro, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
