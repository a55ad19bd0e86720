package settlement

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/ethereum/go-ethereum/common"

	"github.com/tollgate-dev/tollgate/config"
)

// Chain is one EVM chain and its USDC, as configured. Nothing in this package names a chain:
// Polygon, Amoy, anvil or any other EVM chain differ only in these values.
type Chain struct {
	// ID is the EIP-155 chain id in decimal ("137"); it is also the ledger's treasury ref.
	ID      string
	Name    string
	RPCURL  string
	chainID *big.Int
	// Token is the USDC contract (FiatToken-compatible: EIP-3009, paused, isBlacklisted).
	Token common.Address
	// DomainName and DomainVersion are the token's EIP-712 domain (name() and "2" for USDC);
	// the worker checks them against the token's DOMAIN_SEPARATOR() at start.
	DomainName    string
	DomainVersion string
	// Confirmations is the finality rule: 0 means the node's `finalized` block tag; N > 0 means
	// a block is final once N blocks are on top of it (for chains without the tag).
	Confirmations uint64
	// TipFloor is the lowest priority fee the chain's nodes accept, in wei (Polygon: 25 gwei).
	TipFloor *big.Int
	// MaxFeeCap bounds the fee cap of any transaction and its replacements, in wei; nil = none.
	MaxFeeCap *big.Int
	// StartBlock is where the deposit watcher starts on its first run; 0 means the finalized
	// block at that moment.
	StartBlock uint64
	// MaxLogRange is the most blocks asked of eth_getLogs at once.
	MaxLogRange uint64
}

// ChainID returns the chain id as a big integer.
func (c Chain) ChainID() *big.Int { return new(big.Int).Set(c.chainID) }

// ChainsFromConfig turns the validated configuration into chains.
func ChainsFromConfig(cfgs []config.Chain) ([]Chain, error) {
	out := make([]Chain, 0, len(cfgs))
	for i, c := range cfgs {
		c = c.ChainDefaults()
		id, ok := new(big.Int).SetString(c.ID, 10)
		if !ok || id.Sign() <= 0 {
			return nil, fmt.Errorf("settle.chains[%d].id: not a positive decimal chain id: %q", i, c.ID)
		}
		if !common.IsHexAddress(c.USDC) {
			return nil, fmt.Errorf("settle.chains[%d].usdc: not an address: %q", i, c.USDC)
		}
		floor, err := config.ParseGwei(c.TipFloorGwei)
		if err != nil {
			return nil, fmt.Errorf("settle.chains[%d].tip_floor_gwei: %w", i, err)
		}
		var maxFee *big.Int
		if c.MaxFeeCapGwei != "" {
			if maxFee, err = config.ParseGwei(c.MaxFeeCapGwei); err != nil {
				return nil, fmt.Errorf("settle.chains[%d].max_fee_cap_gwei: %w", i, err)
			}
		}
		ch := Chain{
			ID:            id.String(),
			Name:          c.Name,
			RPCURL:        c.RPCURL,
			chainID:       id,
			Token:         common.HexToAddress(c.USDC),
			DomainName:    c.EIP712Name,
			DomainVersion: c.EIP712Version,
			TipFloor:      floor,
			MaxFeeCap:     maxFee,
			StartBlock:    c.StartBlock,
			MaxLogRange:   c.MaxLogRange,
		}
		if strings.EqualFold(c.Finality, config.FinalityConfirmations) {
			ch.Confirmations = c.Confirmations
		}
		out = append(out, ch.withDefaults())
	}
	return out, nil
}

// NewChain builds a chain from values, for tests and tools; id is the decimal chain id.
func NewChain(id *big.Int, token common.Address, domainName string) Chain {
	return Chain{
		ID:            id.String(),
		Name:          "chain-" + id.String(),
		chainID:       new(big.Int).Set(id),
		Token:         token,
		DomainName:    domainName,
		DomainVersion: "2",
	}.withDefaults()
}

func (c Chain) withDefaults() Chain {
	if c.DomainVersion == "" {
		c.DomainVersion = "2"
	}
	if c.TipFloor == nil {
		c.TipFloor = new(big.Int)
	}
	if c.MaxLogRange == 0 {
		c.MaxLogRange = 1000
	}
	return c
}

// lowerHex is the lower-case 0x form of an address, as every table stores it.
func lowerHex(a common.Address) string { return strings.ToLower(a.Hex()) }
