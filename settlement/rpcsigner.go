package settlement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"
)

// RPCSigner signs through a remote signer's Ethereum JSON-RPC API, so that the hot wallet's key
// never enters this process: Web3Signer (its eth1 mode), or any node holding the key unlocked
// (anvil does, in the tests). Transactions are signed with eth_signTransaction; authorizations,
// as EIP-712 typed data, with eth_signTypedData_v4 — or eth_signTypedData, Web3Signer's name for
// it (with the typed data as a JSON string, as Web3Signer's handler reads it), when the signer
// does not know the first. Nothing it returns is trusted: a transaction must
// be exactly the one asked for and signed by the hot wallet, and signAuthorization checks that a
// signature recovers to it.
type RPCSigner struct {
	rpc  *rpc.Client
	addr common.Address
	url  string // only to keep it out of errors
	// legacyTyped: the signer does not know eth_signTypedData_v4 but answered eth_signTypedData.
	legacyTyped atomic.Bool
}

// NewRPCSigner connects to the remote signer at signerURL and checks that it holds address (its
// eth_accounts lists it). Errors never contain the URL, which may carry credentials.
func NewRPCSigner(ctx context.Context, signerURL string, address common.Address) (*RPCSigner, error) {
	c, err := rpc.DialContext(ctx, signerURL)
	if err != nil {
		return nil, errors.New("settlement: the remote signer's URL is not one this client can dial (http, https, ws or wss)")
	}
	s := &RPCSigner{rpc: c, addr: address, url: signerURL}
	var accounts []common.Address
	if err := c.CallContext(ctx, &accounts, "eth_accounts"); err != nil {
		c.Close()
		return nil, fmt.Errorf("settlement: ask the remote signer for its accounts: %w", scrub(err, signerURL))
	}
	if !slices.Contains(accounts, address) {
		c.Close()
		return nil, fmt.Errorf("settlement: the remote signer does not hold the hot wallet %s (it holds %d other account(s))", address.Hex(), len(accounts))
	}
	return s, nil
}

// scrub removes the signer's URL from an error's text. Go's HTTP client shows the URL it
// failed to reach (a *url.Error) with any password masked but a token in the path or query as
// it is, so both the URL as given and the one the *url.Error shows are removed.
func scrub(err error, signerURL string) error {
	msg := err.Error()
	forms := []string{signerURL}
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		forms = append(forms, ue.URL)
	}
	for _, f := range forms {
		if f != "" {
			msg = strings.ReplaceAll(msg, f, "<signer url>")
		}
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// Close closes the connection.
func (s *RPCSigner) Close() { s.rpc.Close() }

// Address is the hot wallet.
func (s *RPCSigner) Address() common.Address { return s.addr }

// txArgs is eth_signTransaction's argument for an EIP-1559 transaction.
type txArgs struct {
	From                 common.Address  `json:"from"`
	To                   *common.Address `json:"to,omitempty"`
	Gas                  hexutil.Uint64  `json:"gas"`
	MaxFeePerGas         *hexutil.Big    `json:"maxFeePerGas"`
	MaxPriorityFeePerGas *hexutil.Big    `json:"maxPriorityFeePerGas"`
	Value                *hexutil.Big    `json:"value"`
	Nonce                hexutil.Uint64  `json:"nonce"`
	Data                 hexutil.Bytes   `json:"data"`
	Input                hexutil.Bytes   `json:"input"`
	ChainID              *hexutil.Big    `json:"chainId"`
	Type                 hexutil.Uint64  `json:"type"`
}

// SignTx has the remote signer sign tx, an EIP-1559 transaction, for chainID, and checks that
// what comes back is that transaction, signed by the hot wallet.
func (s *RPCSigner) SignTx(ctx context.Context, tx *types.Transaction, chainID *big.Int) (*types.Transaction, error) {
	if tx.Type() != types.DynamicFeeTxType {
		return nil, fmt.Errorf("settlement: the remote signer is asked for EIP-1559 transactions only, not type %d", tx.Type())
	}
	args := txArgs{From: s.addr, To: tx.To(), Gas: hexutil.Uint64(tx.Gas()), MaxFeePerGas: (*hexutil.Big)(tx.GasFeeCap()),
		MaxPriorityFeePerGas: (*hexutil.Big)(tx.GasTipCap()), Value: (*hexutil.Big)(tx.Value()), Nonce: hexutil.Uint64(tx.Nonce()),
		Data: tx.Data(), Input: tx.Data(), ChainID: (*hexutil.Big)(chainID), Type: types.DynamicFeeTxType}
	var raw hexutil.Bytes
	if err := s.rpc.CallContext(ctx, &raw, "eth_signTransaction", args); err != nil {
		return nil, fmt.Errorf("settlement: remote signer: eth_signTransaction: %w", scrub(err, s.url))
	}
	signed := new(types.Transaction)
	if err := signed.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("settlement: remote signer: eth_signTransaction returned no transaction: %w", err)
	}
	if err := sameTx(signed, tx, chainID); err != nil {
		return nil, fmt.Errorf("settlement: remote signer signed another transaction than the one asked for: %w", err)
	}
	from, err := types.Sender(types.LatestSignerForChainID(chainID), signed)
	if err != nil {
		return nil, fmt.Errorf("settlement: remote signer: %w", err)
	}
	if from != s.addr {
		return nil, fmt.Errorf("settlement: remote signer signed as %s, not the hot wallet %s", from.Hex(), s.addr.Hex())
	}
	return signed, nil
}

// sameTx reports how signed differs from the transaction asked for, if it does.
func sameTx(signed, want *types.Transaction, chainID *big.Int) error {
	eqAddr := func(a, b *common.Address) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	switch {
	case signed.Type() != want.Type():
		return fmt.Errorf("type %d", signed.Type())
	case signed.ChainId().Cmp(chainID) != 0:
		return fmt.Errorf("chain %s", signed.ChainId())
	case signed.Nonce() != want.Nonce():
		return fmt.Errorf("nonce %d", signed.Nonce())
	case !eqAddr(signed.To(), want.To()):
		return errors.New("another recipient")
	case signed.Value().Cmp(want.Value()) != 0:
		return fmt.Errorf("value %s", signed.Value())
	case !slices.Equal(signed.Data(), want.Data()):
		return errors.New("other calldata")
	case signed.Gas() != want.Gas():
		return fmt.Errorf("gas %d", signed.Gas())
	case signed.GasFeeCap().Cmp(want.GasFeeCap()) != 0 || signed.GasTipCap().Cmp(want.GasTipCap()) != 0:
		return errors.New("other fees")
	case len(signed.AccessList()) != 0:
		return errors.New("an access list")
	}
	return nil
}

// SignAuthorization has the remote signer sign the authorization as EIP-712 typed data.
func (s *RPCSigner) SignAuthorization(ctx context.Context, c Chain, a Authorization) ([]byte, error) {
	td, err := c.TypedData(a)
	if err != nil {
		return nil, err
	}
	var sig hexutil.Bytes
	// Web3Signer names it eth_signTypedData and reads the typed data as a JSON string.
	legacy := func() error { return s.rpc.CallContext(ctx, &sig, "eth_signTypedData", s.addr, string(td)) }
	method := "eth_signTypedData"
	if s.legacyTyped.Load() {
		err = legacy()
	} else if err = s.rpc.CallContext(ctx, &sig, "eth_signTypedData_v4", s.addr, td); err == nil || !unknownMethod(err) {
		method = "eth_signTypedData_v4"
	} else if err = legacy(); err == nil {
		s.legacyTyped.Store(true)
	}
	if err != nil {
		return nil, fmt.Errorf("settlement: remote signer: %s: %w", method, scrub(err, s.url))
	}
	return sig, nil
}

// unknownMethod reports whether a JSON-RPC error says the method does not exist (-32601, or
// a "not implemented" / "not supported" / "not found" answer some signers give instead).
func unknownMethod(err error) bool {
	var rpcErr rpc.Error
	if errors.As(err, &rpcErr) && rpcErr.ErrorCode() == -32601 {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "not implemented") || strings.Contains(msg, "not supported") ||
		strings.Contains(msg, "method not found") || strings.Contains(msg, "does not exist")
}

// String shows the address, never the URL.
func (s *RPCSigner) String() string { return "remote signer " + s.addr.Hex() }

// GoString shows the address, never the URL (for %#v).
func (s *RPCSigner) GoString() string { return s.String() }

// LogValue shows the address, never the URL.
func (s *RPCSigner) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", "remote"), slog.String("address", s.addr.Hex()))
}
