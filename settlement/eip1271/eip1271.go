// Package eip1271 asks a contract wallet whether it made a signature: EIP-1271
// isValidSignature(bytes32 hash, bytes signature) over eth_call, which returns 0x1626ba7e for
// yes. Sign-in (api/siwe, over an EIP-191 hash) and top-ups (settlement, over an EIP-712
// digest) both use it for the wallets that cannot be checked by ECDSA recovery: Safe,
// Coinbase Smart Wallet and other smart accounts. Check also takes ERC-6492 signatures of
// accounts not deployed yet (see erc6492.go).
package eip1271

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ethereum/go-ethereum/common"
)

// ErrReverted is what a ContractCaller wraps when the node answered that the call reverted.
var ErrReverted = errors.New("eip1271: contract call reverted")

// ContractCaller makes the read-only calls EIP-1271 and ERC-6492 need, on a chain: an eth_call
// to a contract, or, with to nil, a deployless eth_call whose data is creation code (the
// result is what the constructor returns). A call that reverts returns an error wrapping
// ErrReverted (it means "not valid"); any other error means the node could not be asked.
// Chains is the implementation over go-ethereum clients.
type ContractCaller interface {
	CallContract(ctx context.Context, chainID uint64, to *common.Address, data []byte) ([]byte, error)
}

// magic is isValidSignature's selector, which the contract returns for a valid signature.
var magic = [4]byte{0x16, 0x26, 0xba, 0x7e}

// IsValidSignature reports whether wallet, as a contract on chainID, accepts sig over hash.
// It answers as USDC's SignatureChecker does: the call must succeed and return at least 32
// bytes whose first word is the magic value (a bytes4, zero-padded). A revert, another answer,
// or an address without code (the call succeeds with no output) is false with a nil error; an
// error means the node could not be asked, and asking again may succeed.
func IsValidSignature(ctx context.Context, c ContractCaller, chainID uint64, wallet common.Address, hash common.Hash, sig []byte) (bool, error) {
	out, err := c.CallContract(ctx, chainID, &wallet, isValidSignatureCall(hash, sig))
	if errors.Is(err, ErrReverted) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("eip1271: ask %s on chain %d: %w", wallet.Hex(), chainID, err)
	}
	var want [32]byte
	copy(want[:], magic[:])
	return len(out) >= 32 && bytes.Equal(out[:32], want[:]), nil
}

// isValidSignatureCall ABI-encodes isValidSignature(bytes32 hash, bytes signature).
func isValidSignatureCall(hash common.Hash, sig []byte) []byte {
	padded := (len(sig) + 31) / 32 * 32
	out := make([]byte, 0, 4+32*3+padded)
	out = append(out, magic[:]...)
	out = append(out, hash[:]...)
	out = append(out, word(64)...)
	out = append(out, word(uint64(len(sig)))...)
	out = append(out, sig...)
	return append(out, make([]byte, padded-len(sig))...)
}

func word(n uint64) []byte {
	var w [32]byte
	binary.BigEndian.PutUint64(w[24:], n)
	return w[:]
}
