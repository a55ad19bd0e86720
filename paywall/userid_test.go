package paywall

import (
	"errors"
	"strings"
	"testing"
)

func TestValidUserID(t *testing.T) {
	for _, id := range []string{"u", "acme:user_123", "a.b~c@d-e", strings.Repeat("x", 128), "0xABCdef", "guest-7f3a"} {
		if err := ValidUserID(id); err != nil {
			t.Errorf("ValidUserID(%q) = %v", id, err)
		}
	}
	tests := []struct{ id, msg string }{
		{"", "the user id is empty"},
		{strings.Repeat("x", 129), "129 characters long; at most 128"},
		{"a b", `has ' ' at position 2`},
		{"a/b", `has '/' at position 2`},
		{"user%20", `has '%' at position 5`},
		{"é", "position 1"},
		{"a\x00", "position 2"},
		{"a?b", "position 2"},
		{"a#b", "position 2"},
	}
	for _, tt := range tests {
		err := ValidUserID(tt.id)
		if !errors.Is(err, ErrBadUserID) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ValidUserID(%q) = %v; want ErrBadUserID saying %q", tt.id, err, tt.msg)
		}
	}
}

func TestNormalizeWallet(t *testing.T) {
	got, err := NormalizeWallet("0xAbCdEf0123456789ABCDEF0123456789abcdef01")
	if err != nil || got != "0xabcdef0123456789abcdef0123456789abcdef01" {
		t.Errorf("NormalizeWallet = %q, %v", got, err)
	}
	if got, err := NormalizeWallet("0X1111111111111111111111111111111111111111"); err != nil || got != walletA {
		t.Errorf("0X prefix: %q, %v", got, err)
	}
	for _, bad := range []string{"", "0x", "1111111111111111111111111111111111111111", "0x111111111111111111111111111111111111111",
		"0x11111111111111111111111111111111111111111", "0xg111111111111111111111111111111111111111", " 0x111111111111111111111111111111111111111"} {
		if _, err := NormalizeWallet(bad); !errors.Is(err, ErrBadWallet) {
			t.Errorf("NormalizeWallet(%q) = %v, want ErrBadWallet", bad, err)
		}
	}
}
