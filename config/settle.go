package config

import (
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Settle configures `tollgate settle`, the settlement worker, and the chains it watches. The
// HTTP API reads Treasury, TopUps and Chains too, to create top-up intents.
type Settle struct {
	// Treasury receives top-ups and plain deposits on every chain (0x address).
	Treasury string `yaml:"treasury"`
	// HotWallet signs payouts and pays the gas of relayed top-ups. Only `tollgate settle`
	// needs it.
	HotWallet HotWallet `yaml:"hot_wallet"`
	// PollInterval is how often the worker looks at each chain.
	PollInterval time.Duration `yaml:"poll_interval"`
	// LeaseTTL is how long a worker's claim on a hot wallet lasts without renewal; another
	// worker takes over after it.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// AdminAddr is where `tollgate settle` serves /metrics and /healthz (private; "" = no
	// admin listener).
	AdminAddr string `yaml:"admin_addr"`
	// RPCUnhealthyAfter is how long a chain's node may fail to answer before /healthz
	// reports the worker unhealthy.
	RPCUnhealthyAfter time.Duration `yaml:"rpc_unhealthy_after"`
	TopUps            TopUps        `yaml:"topups"`
	Payouts           Payouts       `yaml:"payouts"`
	Chains            []Chain       `yaml:"chains"`
}

// HotWallet is the worker's signing key. Give exactly one of PrivateKey (better through
// TOLLGATE_SETTLE_HOT_WALLET_PRIVATE_KEY), PrivateKeyFile, or SignerURL with Address: a remote
// signer (Web3Signer) that holds the key, so that it never enters the process. Neither the key
// nor the signer's URL is ever logged.
type HotWallet struct {
	PrivateKey     string `yaml:"private_key" secret:"true"`
	PrivateKeyFile string `yaml:"private_key_file"`
	// SignerURL is the remote signer's JSON-RPC endpoint (http, https, ws or wss); it may carry
	// credentials.
	SignerURL string `yaml:"signer_url" secret:"true"`
	// Address is the hot wallet the remote signer signs for.
	Address string `yaml:"address"`
}

// TopUps bounds the top-up intents users are asked to sign.
type TopUps struct {
	// Validity is how long a signature request stays usable (the authorization's validBefore).
	Validity time.Duration `yaml:"validity"`
	MinMicro int64         `yaml:"min_micro"`
	MaxMicro int64         `yaml:"max_micro"`
}

// Payouts bounds what the hot wallet pays out, per chain.
type Payouts struct {
	// MaxMicro is the largest single payout; a larger request fails and its money returns to
	// the developer's earnings.
	MaxMicro int64 `yaml:"max_micro"`
	// DailyMicro caps what is paid in any 24 hours; payouts beyond it wait.
	DailyMicro int64 `yaml:"daily_micro"`
	// AuthorizationValidity is the lifetime of the hot wallet's signed authorization.
	AuthorizationValidity time.Duration `yaml:"authorization_validity"`
	// StuckAfter is how long a transaction may wait unmined before it is replaced with fees
	// 10% (or more) higher.
	StuckAfter time.Duration `yaml:"stuck_after"`
	// MaxAttempts bounds the tries of a payout whose transaction keeps failing for an unknown
	// reason; after it the payout fails and its money returns.
	MaxAttempts int `yaml:"max_attempts"`
	// RetryBackoff is the wait after a transient problem (token paused, low balance).
	RetryBackoff time.Duration `yaml:"retry_backoff"`
}

// Chain is one EVM chain. Adding a chain is configuration only.
type Chain struct {
	ID     string `yaml:"id"` // chain id in decimal, e.g. "137"
	Name   string `yaml:"name"`
	RPCURL string `yaml:"rpc_url" secret:"true"` // provider URLs often carry an API key
	USDC   string `yaml:"usdc"`                  // token address
	// EIP712Name and EIP712Version are the token's EIP-712 domain: "USD Coin" and "2" for
	// native USDC on Polygon. The worker refuses to start if they do not match the token.
	EIP712Name    string `yaml:"eip712_name"`
	EIP712Version string `yaml:"eip712_version"`
	// Finality is "finalized" (the node's finalized block tag; the default) or
	// "confirmations" (Confirmations blocks on top).
	Finality      string `yaml:"finality"`
	Confirmations uint64 `yaml:"confirmations"`
	// TipFloorGwei is the lowest priority fee the chain accepts, in gwei as an exact decimal
	// ("25" on Polygon PoS, which rejects less).
	TipFloorGwei string `yaml:"tip_floor_gwei"`
	// MaxFeeCapGwei bounds any fee cap the worker offers ("" = no bound).
	MaxFeeCapGwei string `yaml:"max_fee_cap_gwei"`
	// StartBlock is where the deposit watcher starts the first time (0 = the finalized block
	// at that moment).
	StartBlock uint64 `yaml:"start_block"`
	// MaxLogRange is the most blocks asked of eth_getLogs at once (default 1000).
	MaxLogRange uint64 `yaml:"max_log_range"`
}

// Finality rules.
const (
	FinalityFinalized     = "finalized"
	FinalityConfirmations = "confirmations"
)

func defaultSettle() Settle {
	return Settle{
		PollInterval:      2 * time.Second,
		LeaseTTL:          30 * time.Second,
		RPCUnhealthyAfter: time.Minute,
		TopUps: TopUps{
			Validity: time.Hour,
			MinMicro: 100_000,        // 0.10 USDC
			MaxMicro: 10_000_000_000, // 10,000 USDC
		},
		Payouts: Payouts{
			MaxMicro:              1_000_000_000,  // 1,000 USDC
			DailyMicro:            10_000_000_000, // 10,000 USDC
			AuthorizationValidity: time.Hour,
			StuckAfter:            3 * time.Minute,
			MaxAttempts:           5,
			RetryBackoff:          time.Minute,
		},
	}
}

// ChainDefaults fills what a chain entry leaves out: the domain of native USDC, the finalized
// tag, no tip floor.
func (c Chain) ChainDefaults() Chain {
	if c.EIP712Name == "" {
		c.EIP712Name = "USD Coin"
	}
	if c.EIP712Version == "" {
		c.EIP712Version = "2"
	}
	if c.Finality == "" {
		c.Finality = FinalityFinalized
	}
	if c.Name == "" {
		c.Name = c.ID
	}
	if c.MaxLogRange == 0 {
		c.MaxLogRange = 1000
	}
	return c
}

var (
	addressRE    = regexp.MustCompile(`^0x[0-9a-fA-F]{40}$`)
	privateKeyRE = regexp.MustCompile(`^(0x)?[0-9a-fA-F]{64}$`)
	chainIDRE    = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
)

func (s Settle) problems() []error {
	var p []error
	if len(s.Chains) > 0 && s.Treasury == "" {
		p = append(p, errors.New("settle.treasury: required when chains are configured"))
	}
	if s.Treasury != "" && !addressRE.MatchString(s.Treasury) {
		p = append(p, fmt.Errorf("settle.treasury: must be a 0x address of 40 hex digits, got %q", s.Treasury))
	}
	hw := s.HotWallet
	if hw.PrivateKey != "" && hw.PrivateKeyFile != "" {
		p = append(p, errors.New("settle.hot_wallet: set private_key or private_key_file, not both"))
	}
	switch {
	case hw.SignerURL != "" && (hw.PrivateKey != "" || hw.PrivateKeyFile != ""):
		p = append(p, errors.New("settle.hot_wallet: set a key (private_key or private_key_file) or a remote signer (signer_url), not both"))
	case hw.SignerURL != "" && hw.Address == "":
		p = append(p, errors.New("settle.hot_wallet.address: required with signer_url (the hot wallet the remote signer signs for)"))
	case hw.SignerURL == "" && hw.Address != "":
		p = append(p, errors.New("settle.hot_wallet.address: only with signer_url (a key gives its own address)"))
	}
	if hw.Address != "" && !addressRE.MatchString(hw.Address) {
		p = append(p, fmt.Errorf("settle.hot_wallet.address: must be a 0x address of 40 hex digits, got %q", hw.Address))
	}
	// The key itself never appears in an error.
	if s.HotWallet.PrivateKey != "" && !privateKeyRE.MatchString(s.HotWallet.PrivateKey) {
		p = append(p, errors.New("settle.hot_wallet.private_key: must be 64 hex digits (optionally 0x-prefixed)"))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"settle.poll_interval", s.PollInterval},
		{"settle.lease_ttl", s.LeaseTTL},
		{"settle.rpc_unhealthy_after", s.RPCUnhealthyAfter},
		{"settle.topups.validity", s.TopUps.Validity},
		{"settle.payouts.authorization_validity", s.Payouts.AuthorizationValidity},
		{"settle.payouts.stuck_after", s.Payouts.StuckAfter},
		{"settle.payouts.retry_backoff", s.Payouts.RetryBackoff},
	} {
		if d.d <= 0 {
			p = append(p, fmt.Errorf("%s: must be positive, got %s", d.name, d.d))
		}
	}
	if s.AdminAddr != "" && !isListenAddr(s.AdminAddr) {
		p = append(p, fmt.Errorf("settle.admin_addr: must be host:port (like 127.0.0.1:9004) or empty for none, got %q", s.AdminAddr))
	}
	if s.LeaseTTL > 0 && s.PollInterval >= s.LeaseTTL {
		p = append(p, fmt.Errorf("settle.lease_ttl: must be longer than settle.poll_interval (%s), got %s", s.PollInterval, s.LeaseTTL))
	}
	if s.TopUps.MinMicro <= 0 || s.TopUps.MaxMicro < s.TopUps.MinMicro {
		p = append(p, fmt.Errorf("settle.topups: need 0 < min_micro <= max_micro, got %d and %d", s.TopUps.MinMicro, s.TopUps.MaxMicro))
	}
	if s.Payouts.MaxMicro <= 0 || s.Payouts.DailyMicro < s.Payouts.MaxMicro {
		p = append(p, fmt.Errorf("settle.payouts: need 0 < max_micro <= daily_micro, got %d and %d", s.Payouts.MaxMicro, s.Payouts.DailyMicro))
	}
	if s.Payouts.MaxAttempts < 1 {
		p = append(p, fmt.Errorf("settle.payouts.max_attempts: must be at least 1, got %d", s.Payouts.MaxAttempts))
	}
	seen := map[string]bool{}
	for i, c := range s.Chains {
		p = append(p, c.problems(fmt.Sprintf("settle.chains[%d]", i))...)
		if seen[c.ID] {
			p = append(p, fmt.Errorf("settle.chains[%d].id: chain %s is configured twice", i, c.ID))
		}
		seen[c.ID] = true
	}
	return p
}

func (c Chain) problems(at string) []error {
	var p []error
	if !chainIDRE.MatchString(c.ID) {
		p = append(p, fmt.Errorf("%s.id: must be a positive decimal chain id, got %q", at, c.ID))
	}
	if u, err := url.Parse(c.RPCURL); err != nil || u.Host == "" ||
		(u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ws" && u.Scheme != "wss") {
		// The URL may carry an API key: name the problem, not the value.
		p = append(p, fmt.Errorf("%s.rpc_url: must be an http(s) or ws(s) URL", at))
	}
	if !addressRE.MatchString(c.USDC) {
		p = append(p, fmt.Errorf("%s.usdc: must be a 0x address of 40 hex digits, got %q", at, c.USDC))
	}
	switch strings.ToLower(c.Finality) {
	case "", FinalityFinalized:
		if c.Confirmations != 0 {
			p = append(p, fmt.Errorf("%s.confirmations: only used with finality: confirmations", at))
		}
	case FinalityConfirmations:
		if c.Confirmations < 1 {
			p = append(p, fmt.Errorf("%s.confirmations: must be at least 1 with finality: confirmations", at))
		}
	default:
		p = append(p, fmt.Errorf("%s.finality: must be %q or %q, got %q", at, FinalityFinalized, FinalityConfirmations, c.Finality))
	}
	floor, err := ParseGwei(c.TipFloorGwei)
	if err != nil {
		p = append(p, fmt.Errorf("%s.tip_floor_gwei: %w", at, err))
	}
	if c.MaxFeeCapGwei != "" {
		maxFee, err := ParseGwei(c.MaxFeeCapGwei)
		switch {
		case err != nil:
			p = append(p, fmt.Errorf("%s.max_fee_cap_gwei: %w", at, err))
		case floor != nil && maxFee.Cmp(floor) < 0:
			p = append(p, fmt.Errorf("%s.max_fee_cap_gwei: must be at least tip_floor_gwei", at))
		}
	}
	return p
}

// ParseGwei reads an exact decimal amount of gwei ("25", "0.001", "" = 0) and returns wei.
// It refuses negative amounts and more than 9 decimals (below one wei).
func ParseGwei(s string) (*big.Int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return new(big.Int), nil
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || !isDigits(whole) || (frac != "" && !isDigits(frac)) || strings.HasSuffix(s, ".") {
		return nil, fmt.Errorf("not a non-negative decimal number of gwei: %q", s)
	}
	if len(frac) > 9 {
		return nil, fmt.Errorf("more precise than one wei: %q", s)
	}
	wei, ok := new(big.Int).SetString(whole+frac+strings.Repeat("0", 9-len(frac)), 10)
	if !ok {
		return nil, fmt.Errorf("not a number: %q", s)
	}
	return wei, nil
}

// isListenAddr reports whether s is a host:port a listener can take (the host may be empty).
func isListenAddr(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil || !isDigits(port) {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n <= 65535
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
