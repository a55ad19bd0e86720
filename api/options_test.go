package api

import (
	"strings"
	"testing"
)

// TestNewRefusesImpossiblePayoutBounds: a smallest withdrawal above the largest one or above
// the daily cap would refuse every withdrawal, so the server does not start with it.
func TestNewRefusesImpossiblePayoutBounds(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name          string
		min, max, day int64
	}{
		{"minimum above the maximum", 60_000_000, 50_000_000, 100_000_000},
		{"minimum above the daily cap", 20_000_000, 50_000_000, 10_000_000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := e.api.opts
			o.MinPayoutMicro, o.MaxPayoutMicro, o.DailyPayoutMicro = tt.min, tt.max, tt.day
			if _, err := New(e.api.deps, o); err == nil || !strings.Contains(err.Error(), "no withdrawal could pass") {
				t.Errorf("New = %v", err)
			}
		})
	}
}
