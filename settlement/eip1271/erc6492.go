package eip1271

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/tollgate-dev/tollgate/contracts/bindings"
)

// ERC-6492: a smart account that is not deployed yet (no code at its address until its first
// transaction) signs with a wrapper around its future EIP-1271 signature:
//
//	abi.encode(address factory, bytes factoryCalldata, bytes signature) ‖ 0x6492…6492
//
// Calling factory with factoryCalldata deploys the account; the deployed account's
// isValidSignature takes signature. Check asks in one deployless eth_call (ERC6492Validator,
// ../../contracts/ERC6492Validator.sol): the call simulates the deployment and then asks the
// account, and nothing is written to the chain.

// Suffix is the 32 bytes that end every ERC-6492 signature.
var Suffix = bytes.Repeat([]byte{0x64, 0x92}, 16)

// MaxDeployGas bounds the gas of the factory call a wrapper asks for. The settlement relay
// deploys a top-up's wallet with that very call and the hot wallet pays for it, so a wrapper
// whose deployment needs more is refused as a bad signature.
const MaxDeployGas = 1_000_000

// ErrMalformedWrapper means a signature ends with the ERC-6492 suffix but the rest is not
// abi.encode(address, bytes, bytes).
var ErrMalformedWrapper = errors.New("eip1271: malformed ERC-6492 signature")

// Wrapped is an ERC-6492 signature taken apart.
type Wrapped struct {
	Factory         common.Address
	FactoryCalldata []byte
	// Signature is the inner signature, as the deployed account's isValidSignature takes it.
	Signature []byte
}

// IsWrapped reports whether sig ends with the ERC-6492 suffix (and has room for a wrapper).
func IsWrapped(sig []byte) bool {
	return len(sig) >= len(Suffix) && bytes.Equal(sig[len(sig)-len(Suffix):], Suffix)
}

// ParseWrapped takes an ERC-6492 signature apart. It reads the ABI encoding as Solidity's
// abi.decode does: the address word must be clean (12 zero bytes first), both offsets and
// lengths must stay inside the data; the offsets need not be the canonical ones and the
// padding after each byte string is not checked. The parts are copies.
// It can return: ErrMalformedWrapper.
func ParseWrapped(sig []byte) (Wrapped, error) {
	if !IsWrapped(sig) {
		return Wrapped{}, fmt.Errorf("%w: it does not end with the 0x6492…6492 suffix", ErrMalformedWrapper)
	}
	body := sig[:len(sig)-len(Suffix)]
	if len(body) < 3*32 {
		return Wrapped{}, fmt.Errorf("%w: %d bytes before the suffix, want at least 96", ErrMalformedWrapper, len(body))
	}
	if !isZero(body[:12]) {
		return Wrapped{}, fmt.Errorf("%w: the factory word is not an address", ErrMalformedWrapper)
	}
	var w Wrapped
	w.Factory = common.BytesToAddress(body[12:32])
	var err error
	if w.FactoryCalldata, err = tail(body, body[32:64], "factory calldata"); err != nil {
		return Wrapped{}, err
	}
	if w.Signature, err = tail(body, body[64:96], "signature"); err != nil {
		return Wrapped{}, err
	}
	return w, nil
}

// Encode is the wrapper as a wallet makes it: the canonical abi.encode(factory,
// factoryCalldata, signature) followed by Suffix.
func (w Wrapped) Encode() []byte {
	padded := func(b []byte) int { return (len(b) + 31) / 32 * 32 }
	second := 3*32 + 32 + padded(w.FactoryCalldata)
	out := make([]byte, 0, second+32+padded(w.Signature)+len(Suffix))
	out = append(out, common.LeftPadBytes(w.Factory.Bytes(), 32)...)
	out = append(out, word(3*32)...)
	out = append(out, wordOf(second)...)
	for _, b := range [][]byte{w.FactoryCalldata, w.Signature} {
		out = append(out, wordOf(len(b))...)
		out = append(out, b...)
		out = append(out, make([]byte, padded(b)-len(b))...)
	}
	return append(out, Suffix...)
}

// wordOf is a length or offset as an ABI word (never negative).
func wordOf(n int) []byte {
	if n < 0 {
		n = 0
	}
	return word(uint64(n))
}

// tail reads the byte string whose offset (from the start of body) is the word at.
func tail(body, at []byte, what string) ([]byte, error) {
	off, ok := smallWord(at)
	if !ok || off > uint64(len(body)) || uint64(len(body))-off < 32 {
		return nil, fmt.Errorf("%w: the %s's offset is outside the signature", ErrMalformedWrapper, what)
	}
	n, ok := smallWord(body[off : off+32])
	if !ok || n > uint64(len(body))-off-32 {
		return nil, fmt.Errorf("%w: the %s's length runs past the signature", ErrMalformedWrapper, what)
	}
	start := off + 32
	return bytes.Clone(body[start : start+n]), nil
}

// smallWord reads a 32-byte big-endian word that fits in 32 bits (anything larger cannot be
// an offset or length inside a signature of at most a few KiB).
func smallWord(w []byte) (uint64, bool) {
	if !isZero(w[:28]) {
		return 0, false
	}
	return uint64(w[28])<<24 | uint64(w[29])<<16 | uint64(w[30])<<8 | uint64(w[31]), true
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Verdict is a wallet's answer about a signature.
type Verdict int

// Verdicts. The last three are for ERC-6492 signatures only.
const (
	// Refused: the wallet does not accept the signature (another answer, a revert, no code).
	Refused Verdict = iota
	// Accepted: the wallet's isValidSignature answered 0x1626ba7e.
	Accepted
	// FactoryFailed: the wallet has no code and the wrapper's factory call reverted, or needed
	// more gas than allowed.
	FactoryFailed
	// NotDeployed: the factory call returned, but left no code at the wallet's address (it
	// deploys another account).
	NotDeployed
	// Malformed: the signature ends with the ERC-6492 suffix but is not a wrapper.
	Malformed
)

// Reason says what the verdict means, for an error message about wallet.
func (v Verdict) Reason(wallet common.Address) string {
	switch v {
	case Accepted:
		return wallet.Hex() + " accepts it (EIP-1271 isValidSignature)"
	case FactoryFailed:
		return wallet.Hex() + " is not deployed, and its ERC-6492 factory call reverts or needs more gas than a deployment may use"
	case NotDeployed:
		return wallet.Hex() + " is not deployed, and its ERC-6492 factory call does not deploy it"
	case Malformed:
		return "it ends with the ERC-6492 suffix but is not abi.encode(factory, calldata, signature)"
	}
	return wallet.Hex() + " does not accept it as a contract wallet (EIP-1271 isValidSignature)"
}

// validator is ERC6492Validator's binding; validatorCode its creation code.
var (
	validator     = bindings.NewERC6492Validator()
	validatorCode = common.FromHex(bindings.ERC6492ValidatorMetaData.Bin)
)

// CallTimeout bounds Check's question to the wallet's chain, for sign-in and top-ups alike: a
// node that does not answer by then is an error (asking again may succeed), not a request that
// waits on it.
const CallTimeout = 10 * time.Second

// Check asks whether wallet, on chainID, accepts sig over hash, within CallTimeout. A
// signature that ends with the ERC-6492 suffix is unwrapped and decided by one deployless
// eth_call of ERC6492Validator: if the wallet has no code, the call runs the factory call with
// at most deployGas (a deployment that needs more fails, FactoryFailed) and then asks the new
// wallet about the inner signature (callers pass MaxDeployGas); if it has code, the wallet is
// asked at once, as ERC-6492 says. Any other signature is asked with IsValidSignature. An
// error means the node could not be asked (or gave an answer that is not one), and asking
// again may succeed.
func Check(ctx context.Context, c ContractCaller, chainID uint64, wallet common.Address, hash common.Hash, sig []byte, deployGas uint64) (Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	if !IsWrapped(sig) {
		ok, err := IsValidSignature(ctx, c, chainID, wallet, hash, sig)
		if err != nil || !ok {
			return Refused, err
		}
		return Accepted, nil
	}
	// A malformed wrapper is a verdict on the signature, not a node that could not be asked.
	w, err := ParseWrapped(sig)
	if errors.Is(err, ErrMalformedWrapper) {
		return Malformed, nil
	}
	data := append(bytes.Clone(validatorCode),
		validator.PackConstructor(wallet, hash, w.Factory, w.FactoryCalldata, w.Signature, new(big.Int).SetUint64(deployGas))...)
	out, err := c.CallContract(ctx, chainID, nil, data)
	if errors.Is(err, ErrReverted) {
		return Refused, nil
	}
	if err != nil {
		return Refused, fmt.Errorf("eip1271: ask %s (ERC-6492) on chain %d: %w", wallet.Hex(), chainID, err)
	}
	if len(out) != 32 || !isZero(out[:31]) || out[31] > 3 {
		return Refused, fmt.Errorf("eip1271: ask %s (ERC-6492) on chain %d: the node answered the deployless call with %x, not a verdict", wallet.Hex(), chainID, out)
	}
	// The contract's answers, in its order: 0 no, 1 yes, 2 factory failed, 3 not deployed.
	return [...]Verdict{Refused, Accepted, FactoryFailed, NotDeployed}[out[31]], nil
}
