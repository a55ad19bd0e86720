package config

import (
	"testing"
)

// TestServeDefaultsValid: the defaults alone are a valid serve section.
func TestServeDefaultsValid(t *testing.T) {
	if p := defaultServe().problems(); len(p) != 0 {
		t.Fatalf("defaults have problems: %v", p)
	}
}

// TestServeBad reports every problem of the serve section at once, each with its exact text.
func TestServeBad(t *testing.T) {
	loadFails(t, "testdata/bad_serve_many.yaml", nil,
		"9 problem(s)",
		"serve.provider.name: required",
		`serve.provider.generation_url: must be an absolute http(s) URL when generation_wait is set, got "openrouter.ai/api/v1/generation"`,
		"serve.fee_bps: must be 0…10000 basis points, got 12000",
		`serve.routing_header: must be a lower-case header name (not :pseudo, host or x-envoy-*), got "X-Upstream"`,
		"serve.hold_ttl: must be 1m…24h, got 10s",
		"serve.default_max_tokens: must be 1…max_tokens_limit (1000000), got 0",
		"serve.prompt_margin_pct: must be 0…1000, got -1",
		"serve.grpc_max_recv_bytes: must be at least max_body_bytes + 64KiB (16842752), got 4194304",
		"serve.message_budget: must be positive and at most 1m, got 0s",
	)
}

// TestServeGenerationWait: the wait for the provider's record is bounded; 0 turns it off, and
// then no URL is needed.
func TestServeGenerationWait(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Serve.Provider; p.GenerationWait.String() != "1m0s" || p.GenerationURL != "https://openrouter.ai/api/v1/generation" {
		t.Errorf("defaults %+v", p)
	}
	loadFails(t, "", []string{"TOLLGATE_SERVE_PROVIDER_GENERATION_WAIT=11m"}, "serve.provider.generation_wait: must be 0 (never ask)…10m, got 11m0s")
	loadFails(t, "", []string{"TOLLGATE_SERVE_PROVIDER_GENERATION_WAIT=-1s"}, "serve.provider.generation_wait: must be 0 (never ask)…10m, got -1s")
	if _, err := Load("", []string{"TOLLGATE_SERVE_PROVIDER_GENERATION_WAIT=0s", "TOLLGATE_SERVE_PROVIDER_GENERATION_URL="}); err != nil {
		t.Errorf("off, without a URL: %v", err)
	}
}

func TestServeEnvOverridesAndRedaction(t *testing.T) {
	cfg, err := Load("", []string{"TOLLGATE_SERVE_PROVIDER_API_KEY=sk-or-secret", "TOLLGATE_SERVE_FEE_BPS=250", "TOLLGATE_SERVE_HOLD_TTL=5m"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Serve.Provider.APIKey != "sk-or-secret" || cfg.Serve.FeeBps != 250 || cfg.Serve.HoldTTL.String() != "5m0s" {
		t.Errorf("overrides not applied: %+v", cfg.Serve)
	}
	if got := cfg.Redacted().Serve.Provider.APIKey; got != "[redacted]" {
		t.Errorf("provider key not redacted: %q", got)
	}
}
