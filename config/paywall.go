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
}

// SecretsKeySize is the decoded length of paywall.secrets_key.
const SecretsKeySize = 32

func (p Paywall) problems() []error {
	if p.SecretsKey == "" {
		return nil
	}
	// The value is a secret: the messages never show it.
	key, err := base64.StdEncoding.DecodeString(p.SecretsKey)
	if err != nil {
		return []error{errors.New("paywall.secrets_key: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it is not base64")}
	}
	if len(key) != SecretsKeySize {
		return []error{fmt.Errorf("paywall.secrets_key: must be standard base64 of 32 random bytes (`openssl rand -base64 32`); it decodes to %d bytes", len(key))}
	}
	return nil
}
