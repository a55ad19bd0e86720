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

const (
	testPreviousKey = "ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=" // bytes 33…64
	testOlderKey    = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eX2A=" // bytes 65…96
)

// TestPaywallPreviousSecretsKeys: the keys a rotation replaces are checked like the secrets key
// (each problem named by its index, never showing a value), need the secrets key beside them,
// come from the environment as a comma-separated list, and are redacted.
func TestPaywallPreviousSecretsKeys(t *testing.T) {
	msg := loadFails(t, "testdata/bad_paywall_previous_keys.yaml", nil,
		"3 problem(s)",
		"paywall.previous_secrets_keys[0]: is paywall.secrets_key itself; list only the keys it replaces",
		"paywall.previous_secrets_keys[1]: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it decodes to 5 bytes",
		"paywall.previous_secrets_keys[2]: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it is not base64")
	for _, secret := range []string{testSecretsKey, "c2hvcnQ=", "not base64!"} {
		if strings.Contains(msg, secret) {
			t.Errorf("the error shows a secret: %s", msg)
		}
	}
	loadFails(t, "testdata/bad_paywall_previous_alone.yaml", nil,
		"paywall.previous_secrets_keys: set only beside paywall.secrets_key, the key that replaces them")

	cfg, err := Load("", []string{"TOLLGATE_PAYWALL_SECRETS_KEY=" + testSecretsKey,
		"TOLLGATE_PAYWALL_PREVIOUS_SECRETS_KEYS=" + testPreviousKey + "," + testOlderKey})
	if err != nil {
		t.Fatalf("TOLLGATE_PAYWALL_PREVIOUS_SECRETS_KEYS: %v", err)
	}
	if got := cfg.Paywall.PreviousSecretsKeys; len(got) != 2 || got[0] != testPreviousKey || got[1] != testOlderKey {
		t.Fatalf("TOLLGATE_PAYWALL_PREVIOUS_SECRETS_KEYS gave %d keys", len(got))
	}
	red := cfg.Redacted()
	if got := red.Paywall.PreviousSecretsKeys; len(got) != 2 || got[0] != "[redacted]" || got[1] != "[redacted]" {
		t.Errorf("previous keys not redacted: %q", got)
	}
	if cfg.Paywall.PreviousSecretsKeys[0] != testPreviousKey {
		t.Error("Redacted changed the original")
	}
}
