package pricing

import (
	"encoding/json"
	"errors"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseDecimal(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0", "0"}, {"0.0", "0"}, {"-0", "0"}, {"3", "3"}, {"+3", "3"}, {"0.15", "0.15"},
		{"0.150000", "0.15"}, {"000123.4500", "123.45"}, {"1200", "1200"}, {"-2.5", "-2.5"},
		{"0.00000015", "0.00000015"}, {"1.5e-7", "0.00000015"}, {"1.5E-7", "0.00000015"},
		{"15e+2", "1500"}, {"1e40", "1" + strings.Repeat("0", 40)}, {"1000e37", "1" + strings.Repeat("0", 40)},
		{"1e-40", "0." + strings.Repeat("0", 39) + "1"}, {"0e999", "0"},
		{strings.Repeat("9", 40), strings.Repeat("9", 40)},
	}
	for _, tt := range tests {
		d, err := ParseDecimal(tt.in)
		if err != nil || d.String() != tt.want || !d.IsSet() {
			t.Errorf("ParseDecimal(%q) = %q, %v; want %q", tt.in, d.String(), err, tt.want)
		}
	}
}

func TestParseDecimalErrors(t *testing.T) {
	for _, in := range []string{
		"", " 1", "1 ", "1,5", "1.2.3", ".5", "5.", ".", "-", "+", "e5", "1e", "1e+", "1e5.5", "0x10",
		"NaN", "Inf", "-Inf", "1_000", "١", "1e99999", "1e41", "1e-41", "10e40",
		strings.Repeat("1", 41), strings.Repeat("0", 65), "1ee5", "--1", "1e-", "\x00",
	} {
		if d, err := ParseDecimal(in); !errors.Is(err, ErrBadDecimal) {
			t.Errorf("ParseDecimal(%q) = %v, %v; want ErrBadDecimal", in, d, err)
		}
	}
}

func TestDecimalValues(t *testing.T) {
	if (Decimal{}).IsSet() || (Decimal{}).String() != "" || (Decimal{}).Sign() != 0 {
		t.Error("the zero Decimal must be unset and read as 0")
	}
	zero := NewDecimal(0, 0)
	if !zero.IsSet() || zero.String() != "0" || zero.Equal(Decimal{}) {
		t.Error("an explicit zero is set, and differs from unset")
	}
	if !NewDecimal(150, -3).Equal(dec(t, "0.15")) || NewDecimal(15, -2).Cmp(dec(t, "0.16")) >= 0 {
		t.Error("equal values must compare equal whatever their spelling")
	}
	if got := dec(t, "0.00000015").Shift(6).String(); got != "0.15" {
		t.Errorf("Shift(6) = %s", got)
	}
	if got := dec(t, "0.0000025").mul(dec(t, "0.8")).String(); got != "0.000002" {
		t.Errorf("mul = %s", got)
	}
	if got := NewDecimal(1, 0).sub(dec(t, "0.25")).String(); got != "0.75" {
		t.Errorf("sub = %s", got)
	}
}

func TestDecimalJSON(t *testing.T) {
	p := Price{Input: dec(t, "0.15"), Output: dec(t, "0.6")}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"Input":"0.15"`) || !strings.Contains(string(raw), `"CachedInput":""`) {
		t.Errorf("JSON = %s", raw)
	}
	var back Price
	if err := json.Unmarshal(raw, &back); err != nil || !back.Equal(p) {
		t.Errorf("round trip = %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"Input":"abc"}`), &back); !errors.Is(err, ErrBadDecimal) {
		t.Errorf("bad decimal in JSON: %v", err)
	}
}

// FuzzParseDecimal: never panics; what it accepts is what big.Rat reads from the same text,
// and its String form reads back to the same value.
func FuzzParseDecimal(f *testing.F) {
	for _, s := range []string{"0", "0.15", "-2.5", "1.5e-7", "1e40", "0.00000015", "000.100", "1e", ".5", "9e9999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDecimal(s)
		if err != nil {
			if !errors.Is(err, ErrBadDecimal) {
				t.Fatalf("error %v does not wrap ErrBadDecimal", err)
			}
			return
		}
		want, ok := new(big.Rat).SetString(s)
		if !ok || want.Cmp(d.rat()) != 0 {
			t.Fatalf("ParseDecimal(%q) = %s; big.Rat reads %v (%v)", s, d, want, ok)
		}
		back, err := ParseDecimal(d.String())
		if err != nil && len(d.String()) <= maxDecimalLen {
			t.Fatalf("String %q of %q does not parse: %v", d.String(), s, err)
		}
		if err == nil && !back.Equal(d) {
			t.Fatalf("round trip of %q: %s != %s", s, back, d)
		}
	})
}

func TestPriceEqual(t *testing.T) {
	base := Price{Input: dec(t, "1"), Output: dec(t, "2")}
	tests := []struct {
		name string
		a, b Price
		want bool
	}{
		{"same", base, base, true},
		{"spelling does not matter", base, Price{Input: dec(t, "1.000"), Output: dec(t, "2e0")}, true},
		{"unset request is a zero request", base, Price{Input: base.Input, Output: base.Output, Request: dec(t, "0")}, true},
		{"unset cache rate differs from a set one", base, Price{Input: base.Input, Output: base.Output, CachedInput: dec(t, "1")}, false},
		{"different output", base, Price{Input: base.Input, Output: dec(t, "3")}, false},
	}
	for _, tt := range tests {
		if got := tt.a.Equal(tt.b); got != tt.want {
			t.Errorf("%s: Equal = %v", tt.name, got)
		}
	}
}

// TestCmpFastPathMatchesRat: the allocation-free comparison agrees with big.Rat.
func TestCmpFastPathMatchesRat(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	values := []Decimal{{}, NewDecimal(0, 0), NewDecimal(-1, 0), NewDecimal(1, 40), NewDecimal(1, -40)}
	for range 2000 {
		values = append(values, NewDecimal(r.Int64N(1<<62)-(1<<60), int32(r.IntN(50))-25))
	}
	for i, a := range values {
		b := values[(i*7+3)%len(values)]
		if got, want := a.Cmp(b), a.rat().Cmp(b.rat()); got != want {
			t.Fatalf("Cmp(%s, %s) = %d, want %d", a, b, got, want)
		}
	}
}
