package settlement

import (
	"errors"
	"testing"
)

// TestClassify reads the revert reasons of FiatToken and TestUSDC as geth and anvil word them,
// and tells reverts from transport trouble (which must never count as a failed payout).
func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want failure
	}{
		{"execution reverted: Pausable: paused", failPaused},
		{"execution reverted: revert: Blacklistable: account is blacklisted", failBlacklisted},
		{"execution reverted: ERC20: transfer amount exceeds balance", failBalance},
		{"execution reverted: FiatTokenV2: authorization is used or canceled", failUsed},
		{"execution reverted: FiatTokenV2: authorization is expired", failExpired},
		{"execution reverted: FiatTokenV2: authorization is not yet valid", failExpired},
		{"execution reverted: FiatTokenV2: invalid signature", failSignature},
		{"execution reverted", failUnknown},
		{"insufficient funds for gas * price + value: have 0 want 1", failGas},
		{"Post \"http://127.0.0.1:1\": dial tcp 127.0.0.1:1: connect: connection refused", failTransport},
		{"context deadline exceeded", failTransport},
	} {
		if got := classify(errors.New(tt.msg)); got != tt.want {
			t.Errorf("classify(%q) = %d, want %d", tt.msg, got, tt.want)
		}
	}
}
