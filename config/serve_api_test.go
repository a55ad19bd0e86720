package config

import (
	"testing"
	"time"
)

// TestServeAPIDefaults: 1,000 USDC per charge, 1 USDC per withdrawal at least, 10,000 USDC per
// paywall per 24 hours, answers kept 24 hours.
func TestServeAPIDefaults(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := ServeAPI{MaxChargeMicro: 1_000_000_000, MinPayoutMicro: 1_000_000, DailyPayoutMicro: 10_000_000_000, IdempotencyRetention: 24 * time.Hour}
	if cfg.Serve.API != want {
		t.Errorf("serve.api defaults %+v, want %+v", cfg.Serve.API, want)
	}
}

func TestServeAPIFromFileAndEnv(t *testing.T) {
	cfg, err := Load("testdata/serve_api_good.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := ServeAPI{MaxChargeMicro: 250_000_000, MinPayoutMicro: 5_000_000, DailyPayoutMicro: 2_000_000_000, IdempotencyRetention: 72 * time.Hour}
	if cfg.Serve.API != want {
		t.Errorf("serve.api %+v, want %+v", cfg.Serve.API, want)
	}
	cfg, err = Load("testdata/serve_api_good.yaml", []string{
		"TOLLGATE_SERVE_API_MAX_CHARGE_MICRO=1000000", "TOLLGATE_SERVE_API_IDEMPOTENCY_RETENTION=36h",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Serve.API.MaxChargeMicro != 1_000_000 || cfg.Serve.API.IdempotencyRetention != 36*time.Hour {
		t.Errorf("overrides not applied: %+v", cfg.Serve.API)
	}
}

// TestServeAPIBad reports every problem of serve.api at once, each with its exact text.
func TestServeAPIBad(t *testing.T) {
	for _, tt := range []struct {
		file string
		want []string
	}{
		{"testdata/bad_serve_api_many.yaml", []string{
			"4 problem(s)",
			"serve.api.max_charge_micro: must be 1…1000000000000000 micro-USDC, got 0",
			"serve.api.min_payout_micro: must be 1…1000000000000000 micro-USDC, got -5",
			"serve.api.daily_payout_micro: must be min_payout_micro (-5)…1000000000000000 micro-USDC, got 2000000000000000",
			"serve.api.idempotency_retention: must be 1h…720h, got 10m0s",
		}},
		{"testdata/bad_serve_api_daily.yaml", []string{
			"2 problem(s)",
			"serve.api.daily_payout_micro: must be min_payout_micro (5000000)…1000000000000000 micro-USDC, got 1000000",
			"serve.api.idempotency_retention: must be 1h…720h, got 1000h0m0s",
		}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			loadFails(t, tt.file, nil, tt.want...)
		})
	}
	loadFails(t, "", []string{"TOLLGATE_SERVE_API_MIN_PAYOUT_MICRO=lots"}, `TOLLGATE_SERVE_API_MIN_PAYOUT_MICRO: not an integer: "lots"`)
}
