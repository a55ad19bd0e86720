package settlement

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/tollgate-dev/tollgate/contracts/bindings"
)

// ChainClient is every call the worker makes to a node. *ethclient.Client (a real node or anvil)
// and ethclient/simulated's client both have these methods, so tests run the same worker code
// on the simulated backend and on anvil.
type ChainClient interface {
	ChainID(ctx context.Context) (*big.Int, error)
	// HeaderByNumber takes nil for latest, or big.NewInt(int64(rpc.FinalizedBlockNumber)).
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error)
	// TransactionReceipt returns ethereum.NotFound for an unknown or unmined transaction.
	TransactionReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error)
	CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error)
	EstimateGas(ctx context.Context, msg ethereum.CallMsg) (uint64, error)
	SuggestGasTipCap(ctx context.Context) (*big.Int, error)
	NonceAt(ctx context.Context, account common.Address, block *big.Int) (uint64, error)
	PendingNonceAt(ctx context.Context, account common.Address) (uint64, error)
	BalanceAt(ctx context.Context, account common.Address, block *big.Int) (*big.Int, error)
	// CodeAt tells whether a counterfactual wallet (ERC-6492) is deployed yet.
	CodeAt(ctx context.Context, account common.Address, block *big.Int) ([]byte, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
}

var finalizedTag = big.NewInt(int64(rpc.FinalizedBlockNumber))

// usdc packs and unpacks the token calls; FiatToken has the same signatures.
var usdc = bindings.NewTestUSDC()

// transferCall packs the transferWithAuthorization that uses a signed authorization. The
// From's own ECDSA signature (65 bytes recovering to From) goes in the v,r,s form, which every
// EIP-3009 token has (USDC.e has only that one). Any other signature is a contract wallet's
// (EIP-1271) and goes in FiatTokenV2_2's `bytes signature` form, the one that hands it to the
// wallet's isValidSignature; byContract says so. (abigen names overloads in ABI order: the
// bytes form is TransferWithAuthorization, the v,r,s form TransferWithAuthorization0;
// TestTransferCallSelectors pins both.)
func (c Chain) transferCall(sa SignedAuthorization) (data []byte, byContract bool) {
	a := sa.Authorization
	after, before := new(big.Int).SetUint64(a.ValidAfter), new(big.Int).SetUint64(a.ValidBefore)
	if signer, err := c.Recover(sa); err == nil && signer == a.From {
		v, r, s, _ := sa.ECDSA() // Recover parsed them already
		return usdc.PackTransferWithAuthorization0(a.From, a.To, a.Value, after, before, a.Nonce, v, r, s), false
	}
	return usdc.PackTransferWithAuthorization(a.From, a.To, a.Value, after, before, a.Nonce, sa.Signature), true
}

// token is the chain's USDC as the worker reads it.
type token struct {
	client ChainClient
	chain  Chain
}

func (t token) call(ctx context.Context, data []byte, block *big.Int) ([]byte, error) {
	to := t.chain.Token
	return t.client.CallContract(ctx, ethereum.CallMsg{To: &to, Data: data}, block)
}

func (t token) paused(ctx context.Context) (bool, error) {
	out, err := t.call(ctx, usdc.PackPaused(), nil)
	if err != nil {
		return false, fmt.Errorf("paused(): %w", err)
	}
	return usdc.UnpackPaused(out)
}

func (t token) isBlacklisted(ctx context.Context, a common.Address) (bool, error) {
	out, err := t.call(ctx, usdc.PackIsBlacklisted(a), nil)
	if err != nil {
		return false, fmt.Errorf("isBlacklisted(): %w", err)
	}
	return usdc.UnpackIsBlacklisted(out)
}

func (t token) balanceOf(ctx context.Context, a common.Address) (*big.Int, error) {
	out, err := t.call(ctx, usdc.PackBalanceOf(a), nil)
	if err != nil {
		return nil, fmt.Errorf("balanceOf(): %w", err)
	}
	return usdc.UnpackBalanceOf(out)
}

// authorizationUsed reads authorizationState(authorizer, nonce) at block (nil = latest).
func (t token) authorizationUsed(ctx context.Context, authorizer common.Address, nonce common.Hash, block *big.Int) (bool, error) {
	out, err := t.call(ctx, usdc.PackAuthorizationState(authorizer, nonce), block)
	if err != nil {
		return false, fmt.Errorf("authorizationState(): %w", err)
	}
	return usdc.UnpackAuthorizationState(out)
}

// checkToken verifies that the configured chain and token are what the node serves: the
// chain id, 6 decimals, and the EIP-712 domain (so signatures made from the configuration are
// valid on chain).
func checkToken(ctx context.Context, client ChainClient, c Chain) error {
	id, err := client.ChainID(ctx)
	if err != nil {
		return fmt.Errorf("chain %s: eth_chainId: %w", c.Name, err)
	}
	if id.Cmp(c.chainID) != 0 {
		return mismatchf("chain %s: configured id %s but the node at the RPC URL serves chain %s", c.Name, c.ID, id)
	}
	t := token{client: client, chain: c}
	out, err := t.call(ctx, usdc.PackDecimals(), nil)
	if err != nil {
		return fmt.Errorf("chain %s: decimals() of %s: %w (is usdc the token's address?)", c.Name, c.Token.Hex(), err)
	}
	dec, err := usdc.UnpackDecimals(out)
	if err != nil {
		return mismatchf("chain %s: %s answers no decimals(): is usdc the token's address on this chain?", c.Name, c.Token.Hex())
	}
	if dec != 6 {
		return mismatchf("chain %s: token %s has %d decimals, want 6 (USDC)", c.Name, c.Token.Hex(), dec)
	}
	out, err = t.call(ctx, usdc.PackDOMAINSEPARATOR(), nil)
	if err != nil {
		return fmt.Errorf("chain %s: DOMAIN_SEPARATOR(): %w", c.Name, err)
	}
	onChain, err := usdc.UnpackDOMAINSEPARATOR(out)
	if err != nil {
		return fmt.Errorf("chain %s: DOMAIN_SEPARATOR(): %w", c.Name, err)
	}
	if common.Hash(onChain) != c.DomainSeparator() {
		name := "?"
		if out, err := t.call(ctx, usdc.PackName(), nil); err == nil {
			if n, err := usdc.UnpackName(out); err == nil {
				name = n
			}
		}
		return mismatchf("chain %s: the token's EIP-712 domain is not (name %q, version %q): its name() is %q; set eip712_name and eip712_version",
			c.Name, c.DomainName, c.DomainVersion, name)
	}
	return nil
}

// mismatchError is a configuration that does not match the chain; retrying cannot fix it.
type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }

func mismatchf(format string, args ...any) error {
	return &mismatchError{msg: fmt.Sprintf(format, args...)}
}

// failure classifies why a call or transaction was refused.
type failure int

const (
	failUnknown     failure = iota
	failPaused              // the token is paused: wait
	failBlacklisted         // an account is blacklisted: permanent for that account
	failBalance             // not enough tokens: wait (or top up the hot wallet)
	failUsed                // the authorization was used or canceled
	failExpired             // the authorization's window closed
	failSignature           // the signature is not valid for the token's domain
	failGas                 // the hot wallet cannot pay the gas: wait for a refill
	failTransport           // not an answer about the call (network, node trouble): retry
)

// classify reads a revert reason. FiatToken's and TestUSDC's messages share these phrases.
func classify(err error) failure {
	if err == nil {
		return failUnknown
	}
	msg := strings.ToLower(err.Error())
	if reason, ok := revertReason(err); ok {
		msg += " " + strings.ToLower(reason)
	}
	switch {
	case strings.Contains(msg, "insufficient funds"):
		return failGas
	case !strings.Contains(msg, "revert"):
		return failTransport
	case strings.Contains(msg, "paused"):
		return failPaused
	case strings.Contains(msg, "blacklisted"):
		return failBlacklisted
	case strings.Contains(msg, "exceeds balance"):
		return failBalance
	case strings.Contains(msg, "authorization is used"):
		return failUsed
	case strings.Contains(msg, "authorization is expired"), strings.Contains(msg, "not yet valid"):
		return failExpired
	case strings.Contains(msg, "invalid signature"):
		return failSignature
	}
	return failUnknown
}

// revertReason returns the Error(string) reason of a revert that the node reported with its
// revert data (geth and anvil do, as the JSON-RPC error's data).
func revertReason(err error) (string, bool) {
	var de rpc.DataError
	if !errors.As(err, &de) {
		return "", false
	}
	s, ok := de.ErrorData().(string)
	if !ok {
		return "", false
	}
	reason, uerr := unpackRevert(s)
	return reason, uerr == nil
}

// hasRevertReason reports whether err is a revert that says why (Error(string)).
func hasRevertReason(err error) bool {
	_, ok := revertReason(err)
	return ok
}

// unpackRevert decodes Error(string) revert data given in hex.
func unpackRevert(dataHex string) (string, error) {
	b, err := hexutil.Decode(dataHex)
	if err != nil {
		return "", err
	}
	return abi.UnpackRevert(b)
}
