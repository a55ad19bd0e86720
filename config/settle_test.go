package config

import (
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadSettle(t *testing.T) {
	cfg, err := Load("testdata/settle_good.yaml", []string{"TOLLGATE_SETTLE_HOT_WALLET_PRIVATE_KEY=0x" + strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	s := cfg.Settle
	if len(s.Chains) != 3 || s.Chains[0].ID != "137" || s.Chains[2].Confirmations != 2 {
		t.Fatalf("chains: %+v", s.Chains)
	}
	if s.PollInterval != time.Second || s.TopUps.Validity != 30*time.Minute || s.Payouts.StuckAfter != 3*time.Minute {
		t.Errorf("durations not applied or defaulted: %+v", s)
	}
	if s.AdminAddr != "127.0.0.1:9004" || s.RPCUnhealthyAfter != time.Minute {
		t.Errorf("admin_addr %q, rpc_unhealthy_after %s", s.AdminAddr, s.RPCUnhealthyAfter)
	}
	if s.HotWallet.PrivateKey == "" {
		t.Error("hot wallet key from the environment not applied")
	}
	red := cfg.Redacted()
	if red.Settle.HotWallet.PrivateKey != "[redacted]" || red.Settle.Chains[0].RPCURL != "[redacted]" {
		t.Errorf("secrets not redacted: %+v", red.Settle)
	}
	if d := s.Chains[1].ChainDefaults(); d.EIP712Name != "USDC" || d.EIP712Version != "2" || d.Finality != FinalityFinalized {
		t.Errorf("chain defaults: %+v", d)
	}
}

// TestLoadBadSettle asserts every problem of each bad settle fixture, reported at once; no
// problem text may contain the private key or the RPC URL (they are secrets).
func TestLoadBadSettle(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"bad_settle_no_treasury.yaml", []string{"1 problem(s)", "settle.treasury: required when chains are configured"}},
		{"bad_settle_many.yaml", []string{
			"15 problem(s)",
			`settle.admin_addr: must be host:port (like 127.0.0.1:9004) or empty for none, got "9004"`,
			"settle.rpc_unhealthy_after: must be positive, got -1s",
			`settle.treasury: must be a 0x address of 40 hex digits, got "0x1234"`,
			"settle.hot_wallet: set private_key or private_key_file, not both",
			"settle.hot_wallet.private_key: must be 64 hex digits (optionally 0x-prefixed)",
			"settle.poll_interval: must be positive, got 0s",
			"settle.payouts: need 0 < max_micro <= daily_micro, got 10 and 5",
			`settle.chains[0].id: must be a positive decimal chain id, got "0x89"`,
			"settle.chains[0].rpc_url: must be an http(s) or ws(s) URL",
			`settle.chains[0].usdc: must be a 0x address of 40 hex digits, got "0x3c49"`,
			`settle.chains[0].finality: must be "finalized" or "confirmations", got "safe"`,
			`settle.chains[0].tip_floor_gwei: not a non-negative decimal number of gwei: "-1"`,
			"settle.chains[1].confirmations: must be at least 1 with finality: confirmations",
			`settle.chains[2].tip_floor_gwei: more precise than one wei: "1.0000000001"`,
			"settle.chains[2].id: chain 1 is configured twice",
		}},
		{"bad_settle_signer_both.yaml", []string{"2 problem(s)",
			"settle.hot_wallet: set a key (private_key or private_key_file) or a remote signer (signer_url), not both",
			`settle.hot_wallet.address: must be a 0x address of 40 hex digits, got "0x12"`,
		}},
		{"bad_settle_signer_no_address.yaml", []string{"1 problem(s)",
			"settle.hot_wallet.address: required with signer_url (the hot wallet the remote signer signs for)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			err := loadFails(t, filepath.Join("testdata", tt.file), nil, tt.want...)
			for _, secret := range []string{"not-a-key", "polygon", "a.example", "b.example", "hunter2", "signer.example"} {
				if strings.Contains(err, secret) {
					t.Errorf("the error shows a secret (%s): %v", secret, err)
				}
			}
		})
	}
}

// TestLoadSettleRemoteSigner: a remote signer in place of a key, its URL from the environment
// (it may carry credentials) and redacted.
func TestLoadSettleRemoteSigner(t *testing.T) {
	cfg, err := Load("testdata/bad_settle_signer_no_address.yaml", []string{
		"TOLLGATE_SETTLE_HOT_WALLET_ADDRESS=0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
		"TOLLGATE_SETTLE_HOT_WALLET_SIGNER_URL=https://tollgate:other@signer.internal:9000"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	hw := cfg.Settle.HotWallet
	if hw.SignerURL != "https://tollgate:other@signer.internal:9000" || hw.Address != "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" {
		t.Fatalf("hot wallet %+v", hw)
	}
	if red := cfg.Redacted().Settle.HotWallet; red.SignerURL != "[redacted]" || red.Address != hw.Address {
		t.Errorf("redacted %+v", red)
	}
	loadFails(t, "testdata/settle_good.yaml", []string{
		"TOLLGATE_SETTLE_HOT_WALLET_PRIVATE_KEY=0x" + strings.Repeat("ab", 32),
		"TOLLGATE_SETTLE_HOT_WALLET_ADDRESS=0x70997970C51812dc3A010C7d01b50e0d17dc79C8"},
		"settle.hot_wallet.address: only with signer_url (a key gives its own address)")
}

func TestParseGwei(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"", "0", true}, {"25", "25000000000", true}, {"0.001", "1000000", true},
		{"1.000000001", "1000000001", true}, {"0", "0", true},
		{"-1", "", false}, {"1.", "", false}, {".5", "", false}, {"1e9", "", false},
		{"1.0000000001", "", false}, {"abc", "", false},
	} {
		got, err := ParseGwei(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("ParseGwei(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok {
			want, _ := new(big.Int).SetString(tt.want, 10)
			if got.Cmp(want) != 0 {
				t.Errorf("ParseGwei(%q) = %s, want %s", tt.in, got, tt.want)
			}
		}
	}
}
