package config

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// Paywall configures the paywall store, for `tollgate serve`, `tollgate migrate` and the
// admin commands (`tollgate paywall …`): the same value everywhere.
type Paywall struct {
	// SecretsKey seals BYOK upstream credentials in the database and in Redis (AES-256-GCM):
	// 32 random bytes in standard base64, as `openssl rand -base64 32` prints them. Empty:
	// built-in paywalls work, and BYOK credentials can be neither stored nor read.
	SecretsKey string `yaml:"secrets_key" secret:"true"`
	// PreviousSecretsKeys are former secrets keys, while the secrets key is rotated: a
	// credential sealed with one of them still opens, and `tollgate migrate` seals it again with
	// secrets_key. Remove them once migrate has run. Same format as secrets_key.
	PreviousSecretsKeys []string `yaml:"previous_secrets_keys" secret:"true"`
}

// SecretsKeySize is the decoded length of paywall.secrets_key.
const SecretsKeySize = 32

func (p Paywall) problems() []error {
	var probs []error
	// The values are secrets: the messages never show them.
	check := func(name, value string) {
		key, err := base64.StdEncoding.DecodeString(value)
		switch {
		case err != nil:
			probs = append(probs, fmt.Errorf("%s: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it is not base64", name))
		case len(key) != SecretsKeySize:
			probs = append(probs, fmt.Errorf("%s: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it decodes to %d bytes", name, len(key)))
		}
	}
	if p.SecretsKey != "" {
		check("paywall.secrets_key", p.SecretsKey)
	}
	if len(p.PreviousSecretsKeys) > 0 && p.SecretsKey == "" {
		probs = append(probs, errors.New("paywall.previous_secrets_keys: set only beside paywall.secrets_key, the key that replaces them"))
	}
	for i, k := range p.PreviousSecretsKeys {
		name := fmt.Sprintf("paywall.previous_secrets_keys[%d]", i)
		if k == p.SecretsKey {
			probs = append(probs, fmt.Errorf("%s: is paywall.secrets_key itself; list only the keys it replaces", name))
			continue
		}
		check(name, k)
	}
	return probs
}
