package pricing

import (
	"errors"
	"math"
	"testing"
)

func TestFormatUSDC(t *testing.T) {
	tests := []struct {
		micro int64
		want  string
	}{
		{0, "0.00"}, {1, "0.000001"}, {420000, "0.42"}, {1234567, "1.234567"}, {5000000, "5.00"},
		{-500000, "-0.50"}, {math.MaxInt64, "9223372036854.775807"}, {math.MinInt64, "-9223372036854.775808"},
	}
	for _, tt := range tests {
		if got := FormatUSDC(tt.micro); got != tt.want {
			t.Errorf("FormatUSDC(%d) = %q, want %q", tt.micro, got, tt.want)
		}
	}
}

func TestParseUSDC(t *testing.T) {
	good := map[string]int64{
		"0": 0, "10": 10_000_000, "0.5": 500_000, "2.50": 2_500_000, "1.234567": 1_234_567,
		"0.000001": 1, "9223372036854.775807": math.MaxInt64, "007": 7_000_000,
	}
	for in, want := range good {
		if got, err := ParseUSDC(in); err != nil || got != want {
			t.Errorf("ParseUSDC(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "+1", "1.", ".5", "1.2345678", "1e3", "1,5", " 1", "abc",
		"9223372036854.775808", "9223372036855", "99999999999999999999", "1.2.3"} {
		if got, err := ParseUSDC(in); !errors.Is(err, ErrBadAmount) {
			t.Errorf("ParseUSDC(%q) = %d, %v; want ErrBadAmount", in, got, err)
		}
	}
	for _, m := range []int64{0, 1, 999999, 1000000, 123456789} {
		if got, err := ParseUSDC(FormatUSDC(m)); err != nil || got != m {
			t.Errorf("round trip of %d: %d, %v", m, got, err)
		}
	}
}
