package config

import (
	"strings"
	"testing"
)

const testSecretsKey = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=" // bytes 1…32

// TestPaywallSecretsKey: a fixture per invalid key, each with its exact problem (reported with
// the other sections' problems, never showing the value), the environment override, and
// redaction.
func TestPaywallSecretsKey(t *testing.T) {
	cfg, err := Load("testdata/paywall_good.yaml", nil)
	if err != nil || cfg.Paywall.SecretsKey != testSecretsKey {
		t.Fatalf("Load = %+v, %v", cfg, err)
	}
	if cfg, err := Load("", nil); err != nil || cfg.Paywall.SecretsKey != "" {
		t.Errorf("default: %+v, %v; want no key (built-in paywalls need none)", cfg, err)
	}

	for _, tt := range []struct {
		file, value string
		want        []string
	}{
		{"bad_paywall_short_key.yaml", "c2hvcnQ=", []string{
			"2 problem(s)",
			"paywall.secrets_key: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it decodes to 5 bytes",
			"serve.fee_bps: must be 0…10000 basis points, got -1",
		}},
		{"bad_paywall_not_base64.yaml", "not base64!", []string{
			"1 problem(s)",
			"paywall.secrets_key: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it is not base64",
		}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			if msg := loadFails(t, "testdata/"+tt.file, nil, tt.want...); strings.Contains(msg, tt.value) {
				t.Errorf("the error shows the secret: %s", msg)
			}
		})
	}

	cfg, err = Load("", []string{"TOLLGATE_PAYWALL_SECRETS_KEY=" + testSecretsKey})
	if err != nil || cfg.Paywall.SecretsKey != testSecretsKey {
		t.Fatalf("TOLLGATE_PAYWALL_SECRETS_KEY: %+v, %v", cfg, err)
	}
	if got := cfg.Redacted().Paywall.SecretsKey; got != "[redacted]" {
		t.Errorf("secrets key not redacted: %q", got)
	}
	loadFails(t, "", []string{"TOLLGATE_PAYWALL_SECRETS_KEY=" + testSecretsKey[:20]},
		"paywall.secrets_key: must be standard base64 of 32 random bytes")
}
