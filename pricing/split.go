package pricing

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/tollgate-dev/tollgate/ledger"
)

var (
	// ErrBadSplit means Split was given a negative amount, a provider share above the charge, a fee
	// outside 0…10000 bps, or a provider share without a provider name.
	ErrBadSplit = errors.New("pricing: bad split")
	// ErrMarkupBelowFee means a built-in paywall's markup cannot pay the platform fee, so the
	// developer's share of a charge could go negative. A configuration error.
	ErrMarkupBelowFee = errors.New("pricing: markup cannot cover the platform fee")
	// ErrBadFee means a platform fee outside 0…10000 bps.
	ErrBadFee = errors.New("pricing: platform fee out of range")
)

// Split shares a charge between the built-in provider, the platform and the developer.
//
//   - provider: providerMicro, which the caller computed with ProviderCostMicro (rounded up, so
//     the provider is never short); 0 for BYOK paywalls and manual charges.
//   - platform fee: feeBps of the whole charge, rounded DOWN to a whole micro-USDC (the fee is
//     computed on, and included in, the user's price).
//   - developer: the rest. The developer therefore takes the rounding of the other two shares.
//
// The shares are never negative and always sum to chargeMicro. If the provider's share and
// the fee together exceed the charge, the fee yields (it is lowered to what is left and the
// developer gets 0). That cannot happen for a charge priced by CostMicro and a provider share
// priced by ProviderCostMicro on the same usage when the markup passes CheckBuiltinMarkup;
// it can when a paywall was misconfigured, and then the provider is still paid in full.
//
// It can return: ErrBadSplit.
func Split(chargeMicro, providerMicro, feeBps int64, provider string) (ledger.Split, error) {
	switch {
	case chargeMicro < 0 || providerMicro < 0:
		return ledger.Split{}, fmt.Errorf("%w: negative amount (charge %d, provider %d)", ErrBadSplit, chargeMicro, providerMicro)
	case providerMicro > chargeMicro:
		return ledger.Split{}, fmt.Errorf("%w: provider share %d exceeds the charge %d", ErrBadSplit, providerMicro, chargeMicro)
	case feeBps < 0 || feeBps > bpsDenom:
		return ledger.Split{}, fmt.Errorf("%w: fee %d bps, want 0…%d", ErrBadSplit, feeBps, bpsDenom)
	case providerMicro > 0 && provider == "":
		return ledger.Split{}, fmt.Errorf("%w: a provider share needs the provider's name", ErrBadSplit)
	}
	fee := feeOf(chargeMicro, feeBps)
	fee = min(fee, chargeMicro-providerMicro)
	s := ledger.Split{
		ProviderMicro:  providerMicro,
		FeeMicro:       fee,
		DeveloperMicro: chargeMicro - providerMicro - fee,
	}
	if providerMicro > 0 {
		s.Provider = provider
	}
	return s, nil
}

// feeOf returns ⌊charge × feeBps / 10000⌋ for charge ≥ 0 and 0 ≤ feeBps ≤ 10000, in 128 bits
// because charge × feeBps can exceed int64.
func feeOf(charge, feeBps int64) int64 {
	// Both are non-negative, and q ≤ charge: the conversions cannot overflow.
	hi, lo := bits.Mul64(uint64(charge), uint64(feeBps)) //nolint:gosec // see above
	q, _ := bits.Div64(hi, lo, bpsDenom)                 // hi < 10000 because feeBps ≤ 10000
	return int64(q)                                      //nolint:gosec // see above
}

// CheckFee reports a platform fee outside 0…10000 basis points.
// It can return: ErrBadFee.
func CheckFee(feeBps int64) error {
	if feeBps < 0 || feeBps > bpsDenom {
		return fmt.Errorf("%w: %d bps, want 0…%d", ErrBadFee, feeBps, bpsDenom)
	}
	return nil
}

// MinBuiltinMarkupBps is the smallest markup with which a built-in paywall's charges always
// pay both the provider and a platform fee of feeBps: the least m with
// (10000 + m) × (10000 − fee) ≥ 10000². For a 1 % fee (100 bps) it is 102 bps.
// It can return: ErrBadFee (also for a fee of 100 %, which no markup covers).
func MinBuiltinMarkupBps(feeBps int64) (int64, error) {
	if err := CheckFee(feeBps); err != nil {
		return 0, err
	}
	if feeBps == bpsDenom {
		return 0, fmt.Errorf("%w: a 100 %% fee leaves nothing for the provider", ErrBadFee)
	}
	keep := bpsDenom - feeBps
	m := (bpsDenom*bpsDenom+keep-1)/keep - bpsDenom // ⌈10000² / keep⌉ − 10000
	return m, nil
}

// CheckBuiltinMarkup reports whether a built-in paywall's markup covers the platform fee, for
// the configuration and the CLI to call before a paywall serves a request. With such a
// markup, Split never has to lower the fee and the developer's share is never negative:
// C = ⌈B·(1+m)⌉, P = ⌈B⌉, and C − ⌊C·f⌋ = ⌈C·(1−f)⌉ ≥ ⌈B·(1+m)·(1−f)⌉ ≥ ⌈B⌉ = P.
// It can return: ErrMarkupBelowFee, ErrBadFee, ErrBadMarkup.
func CheckBuiltinMarkup(markupBps, feeBps int64) error {
	if markupBps < 0 || markupBps > MaxMarkupBps {
		return fmt.Errorf("%w: %d bps, want 0…%d", ErrBadMarkup, markupBps, MaxMarkupBps)
	}
	least, err := MinBuiltinMarkupBps(feeBps)
	if err != nil {
		return err
	}
	if markupBps < least {
		return fmt.Errorf("%w: a markup of %d bps cannot pay a platform fee of %d bps; a built-in paywall needs at least %d bps",
			ErrMarkupBelowFee, markupBps, feeBps, least)
	}
	return nil
}
