package pricing

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tollgate-dev/tollgate/ledger"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name                  string
		charge, provider, fee int64
		providerName          string
		want                  ledger.Split
	}{
		{"built-in", 1000, 900, 100, "openrouter", ledger.Split{ProviderMicro: 900, Provider: "openrouter", FeeMicro: 10, DeveloperMicro: 90}},
		{"BYOK: no provider share", 1000, 0, 100, "", ledger.Split{FeeMicro: 10, DeveloperMicro: 990}},
		{"fee rounds down, the developer takes the rest", 999, 0, 100, "", ledger.Split{FeeMicro: 9, DeveloperMicro: 990}},
		{"a charge too small for a fee", 99, 0, 100, "", ledger.Split{DeveloperMicro: 99}},
		{"no fee", 1000, 400, 0, "openrouter", ledger.Split{ProviderMicro: 400, Provider: "openrouter", DeveloperMicro: 600}},
		{"zero charge", 0, 0, 100, "", ledger.Split{}},
		{"the fee yields to the provider", 100, 99, 500, "openrouter", ledger.Split{ProviderMicro: 99, Provider: "openrouter", FeeMicro: 1}},
		{"provider takes everything", 100, 100, 500, "openrouter", ledger.Split{ProviderMicro: 100, Provider: "openrouter"}},
		{"name ignored without a provider share", 100, 0, 0, "openrouter", ledger.Split{DeveloperMicro: 100}},
		{"largest charge, 100 % fee, no overflow", math.MaxInt64, 0, 10000, "", ledger.Split{FeeMicro: math.MaxInt64}},
		{"largest charge, 1 % fee", math.MaxInt64, 0, 100, "", ledger.Split{FeeMicro: 92233720368547758, DeveloperMicro: math.MaxInt64 - 92233720368547758}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Split(tt.charge, tt.provider, tt.fee, tt.providerName)
			if err != nil || got != tt.want {
				t.Fatalf("Split = %+v, %v; want %+v", got, err, tt.want)
			}
			if got.TotalMicro() != tt.charge {
				t.Errorf("shares sum to %d, not %d", got.TotalMicro(), tt.charge)
			}
		})
	}
}

func TestSplitErrors(t *testing.T) {
	tests := []struct {
		name                  string
		charge, provider, fee int64
		providerName          string
	}{
		{"negative charge", -1, 0, 100, ""},
		{"negative provider share", 10, -1, 100, "x"},
		{"provider share above the charge", 10, 11, 100, "x"},
		{"negative fee", 10, 0, -1, ""},
		{"fee above 100 %", 10, 0, 10001, ""},
		{"provider share without a name", 10, 5, 100, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Split(tt.charge, tt.provider, tt.fee, tt.providerName)
			if !errors.Is(err, ErrBadSplit) || got != (ledger.Split{}) {
				t.Errorf("Split = %+v, %v; want ErrBadSplit", got, err)
			}
		})
	}
}

func TestMinBuiltinMarkupBps(t *testing.T) {
	tests := []struct {
		fee, want int64
		err       error
	}{
		{0, 0, nil}, {1, 2, nil}, {100, 102, nil}, {500, 527, nil}, {5000, 10000, nil}, {9999, 99990000, nil},
		{10000, 0, ErrBadFee}, {-1, 0, ErrBadFee}, {10001, 0, ErrBadFee},
	}
	for _, tt := range tests {
		got, err := MinBuiltinMarkupBps(tt.fee)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("MinBuiltinMarkupBps(%d) = %d, %v; want %d, %v", tt.fee, got, err, tt.want, tt.err)
		}
		if err == nil {
			// The least markup: it covers the fee, one less does not.
			if (10000+got)*(10000-tt.fee) < 10000*10000 || got > 0 && (10000+got-1)*(10000-tt.fee) >= 10000*10000 {
				t.Errorf("MinBuiltinMarkupBps(%d) = %d is not the least covering markup", tt.fee, got)
			}
		}
	}
}

func TestCheckBuiltinMarkup(t *testing.T) {
	tests := []struct {
		markup, fee int64
		want        error
	}{
		{102, 100, nil},
		{101, 100, ErrMarkupBelowFee},
		{0, 100, ErrMarkupBelowFee},
		{0, 0, nil},
		{-1, 0, ErrBadMarkup},
		{MaxMarkupBps + 1, 0, ErrBadMarkup},
		{1000, 10000, ErrBadFee},
		{1000, -5, ErrBadFee},
	}
	for _, tt := range tests {
		if err := CheckBuiltinMarkup(tt.markup, tt.fee); !errors.Is(err, tt.want) {
			t.Errorf("CheckBuiltinMarkup(%d, %d) = %v, want %v", tt.markup, tt.fee, err, tt.want)
		}
	}
	if err := CheckBuiltinMarkup(101, 100); err == nil || err.Error() != "pricing: markup cannot cover the platform fee: a markup of 101 bps cannot pay a platform fee of 100 bps; a built-in paywall needs at least 102 bps" {
		t.Errorf("message: %v", err)
	}
}

// TestSplitOfPricedChargesNeverSqueezes checks the claim CheckBuiltinMarkup makes: a charge and
// a provider share priced from the same usage with a covering markup always leave the full
// fee and a non-negative developer share, at the tightest markup too.
func TestSplitOfPricedChargesNeverSqueezes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		p, u := randomPrice(r), randomUsage(r)
		fee := r.Int64N(3000)
		least, err := MinBuiltinMarkupBps(fee)
		if err != nil {
			t.Fatal(err)
		}
		m := least
		if r.IntN(2) == 0 {
			m += r.Int64N(5000)
		}
		charge, err1 := p.CostMicro(u, m)
		provider, err2 := p.ProviderCostMicro(u)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		s, err := Split(charge, provider, fee, "openrouter")
		if err != nil {
			t.Fatalf("Split(%d, %d, %d): %v", charge, provider, fee, err)
		}
		if s.FeeMicro != feeOf(charge, fee) || s.DeveloperMicro < 0 || s.TotalMicro() != charge {
			t.Fatalf("price %v usage %+v markup %d fee %d: split %+v of %d squeezed", p, u, m, fee, s, charge)
		}
	}
}
