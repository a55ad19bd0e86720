package eip1271

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"
)

// ErrUnknownChain means no client is configured for the chain asked about.
var ErrUnknownChain = errors.New("eip1271: no node configured for this chain")

// Chains is a ContractCaller over one go-ethereum client per chain id (ethclient.Client, or the
// simulated backend's client in tests).
type Chains map[uint64]ethereum.ContractCaller

// CallContract runs an eth_call at the latest block on the chain; to nil makes it deployless
// (data is creation code, the result what the constructor returns).
// It can return: ErrUnknownChain, ErrReverted, or the node's error.
func (c Chains) CallContract(ctx context.Context, chainID uint64, to *common.Address, data []byte) ([]byte, error) {
	client, ok := c[chainID]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownChain, chainID)
	}
	out, err := client.CallContract(ctx, ethereum.CallMsg{To: to, Data: data}, nil)
	if err != nil && isRevert(err) {
		return nil, fmt.Errorf("%w: %w", ErrReverted, err)
	}
	return out, err
}

// isRevert reports whether a node's error says the call reverted. Geth-style nodes answer a
// revert with JSON-RPC error code 3 ("execution reverted", with the revert data); some nodes
// only say so in the message.
func isRevert(err error) bool {
	var rerr rpc.Error
	if errors.As(err, &rerr) && rerr.ErrorCode() == 3 {
		return true
	}
	return strings.Contains(err.Error(), "execution reverted")
}
