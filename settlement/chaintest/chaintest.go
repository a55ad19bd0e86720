// Package chaintest is test support for code that talks to an EVM chain: it deploys Tollgate's
// test token, test contract wallet (EIP-1271) and its factory (ERC-6492), sends transactions from test keys and waits
// for them, and starts a real anvil node from tools/node. It works on ethclient/simulated and on anvil alike.
package chaintest

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tollgate-dev/tollgate/contracts/bindings"
)

// Client is the part of a node client these helpers use; *ethclient.Client and
// simulated.Client have it.
type Client interface {
	ChainID(ctx context.Context) (*big.Int, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	PendingNonceAt(ctx context.Context, account common.Address) (uint64, error)
	SuggestGasTipCap(ctx context.Context) (*big.Int, error)
	EstimateGas(ctx context.Context, msg ethereum.CallMsg) (uint64, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
	TransactionReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error)
	CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error)
}

// Token is the test token's binding.
var Token = bindings.NewTestUSDC()

// Sender sends transactions from test keys. Mine is called after each send: Commit on the
// simulated backend, nothing on anvil with interval mining.
type Sender struct {
	Client   Client
	Mine     func()
	TipFloor *big.Int // nil = whatever the node suggests
}

// Send sends data to `to` (nil: contract creation) from key, waits for the receipt and returns
// it. A reverted transaction is an error that says so.
func (s Sender) Send(ctx context.Context, key *ecdsa.PrivateKey, to *common.Address, data []byte) (*types.Receipt, error) {
	tx, err := s.SendAsync(ctx, key, to, data)
	if err != nil {
		return nil, err
	}
	rcpt, err := s.Wait(ctx, tx.Hash())
	if err != nil {
		return nil, err
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return rcpt, fmt.Errorf("chaintest: transaction %s reverted", tx.Hash().Hex())
	}
	return rcpt, nil
}

// SendAsync signs and broadcasts, then mines, without waiting for the receipt.
func (s Sender) SendAsync(ctx context.Context, key *ecdsa.PrivateKey, to *common.Address, data []byte) (*types.Transaction, error) {
	from := crypto.PubkeyToAddress(key.PublicKey)
	chainID, err := s.Client.ChainID(ctx)
	if err != nil {
		return nil, err
	}
	nonce, err := s.Client.PendingNonceAt(ctx, from)
	if err != nil {
		return nil, err
	}
	gas, err := s.Client.EstimateGas(ctx, ethereum.CallMsg{From: from, To: to, Data: data})
	if err != nil {
		return nil, fmt.Errorf("chaintest: estimate gas: %w", err)
	}
	head, err := s.Client.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, err
	}
	tip, err := s.Client.SuggestGasTipCap(ctx)
	if err != nil {
		return nil, err
	}
	if s.TipFloor != nil && tip.Cmp(s.TipFloor) < 0 {
		tip = new(big.Int).Set(s.TipFloor)
	}
	feeCap := new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip)
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas * 13 / 10, To: to, Data: data,
	})
	if err != nil {
		return nil, err
	}
	if err := s.Client.SendTransaction(ctx, tx); err != nil {
		return nil, fmt.Errorf("chaintest: send: %w", err)
	}
	if s.Mine != nil {
		s.Mine()
	}
	return tx, nil
}

// Wait polls for a receipt until ctx ends (at most a minute).
func (s Sender) Wait(ctx context.Context, hash common.Hash) (*types.Receipt, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		rcpt, err := s.Client.TransactionReceipt(ctx, hash)
		if err == nil {
			return rcpt, nil
		}
		if !errors.Is(err, ethereum.NotFound) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("chaintest: no receipt for %s: %w", hash.Hex(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DeployToken deploys TestUSDC (EIP-712 name `name`, version "2") from key, which becomes its
// owner, pauser and blacklister.
func (s Sender) DeployToken(ctx context.Context, key *ecdsa.PrivateKey, name string) (common.Address, error) {
	data := append(hexutil.MustDecode(bindings.TestUSDCMetaData.Bin), Token.PackConstructor(name, "USDC")...)
	rcpt, err := s.Send(ctx, key, nil, data)
	if err != nil {
		return common.Address{}, fmt.Errorf("chaintest: deploy TestUSDC: %w", err)
	}
	return rcpt.ContractAddress, nil
}

// Call runs a read-only call on the token at latest.
func (s Sender) Call(ctx context.Context, token common.Address, data []byte) ([]byte, error) {
	return s.Client.CallContract(ctx, ethereum.CallMsg{To: &token, Data: data}, nil)
}

// BalanceOf reads a token balance in micro-USDC.
func (s Sender) BalanceOf(ctx context.Context, token, account common.Address) (int64, error) {
	out, err := s.Call(ctx, token, Token.PackBalanceOf(account))
	if err != nil {
		return 0, err
	}
	b, err := Token.UnpackBalanceOf(out)
	if err != nil {
		return 0, err
	}
	if !b.IsInt64() {
		return 0, fmt.Errorf("chaintest: balance %s does not fit int64", b)
	}
	return b.Int64(), nil
}

// Mint mints micro-USDC to `to`; key must be the token's owner.
func (s Sender) Mint(ctx context.Context, key *ecdsa.PrivateKey, token, to common.Address, micro int64) error {
	_, err := s.Send(ctx, key, &token, Token.PackMint(to, big.NewInt(micro)))
	return err
}

// Transfer sends micro-USDC from key's address to `to` with a plain ERC-20 transfer.
func (s Sender) Transfer(ctx context.Context, key *ecdsa.PrivateKey, token, to common.Address, micro int64) (*types.Receipt, error) {
	return s.Send(ctx, key, &token, Token.PackTransfer(to, big.NewInt(micro)))
}

// Wallet is the binding of TestWallet, the test EIP-1271 contract wallet.
var Wallet = bindings.NewTestWallet()

// DeployTestWallet deploys a TestWallet owned by owner (its isValidSignature accepts owner's
// ECDSA signatures), from key.
func (s Sender) DeployTestWallet(ctx context.Context, key *ecdsa.PrivateKey, owner common.Address) (common.Address, error) {
	data := append(hexutil.MustDecode(bindings.TestWalletMetaData.Bin), Wallet.PackConstructor(owner)...)
	rcpt, err := s.Send(ctx, key, nil, data)
	if err != nil {
		return common.Address{}, fmt.Errorf("chaintest: deploy TestWallet: %w", err)
	}
	return rcpt.ContractAddress, nil
}

// Factory is the binding of TestWalletFactory, which deploys TestWallets at CREATE2 addresses
// known in advance (counterfactual wallets, ERC-6492).
var Factory = bindings.NewTestWalletFactory()

// DeployTestWalletFactory deploys a TestWalletFactory from key.
func (s Sender) DeployTestWalletFactory(ctx context.Context, key *ecdsa.PrivateKey) (common.Address, error) {
	rcpt, err := s.Send(ctx, key, nil, hexutil.MustDecode(bindings.TestWalletFactoryMetaData.Bin))
	if err != nil {
		return common.Address{}, fmt.Errorf("chaintest: deploy TestWalletFactory: %w", err)
	}
	return rcpt.ContractAddress, nil
}

// CounterfactualWallet is the address at which factory will deploy owner's TestWallet for salt
// (the factory's own getAddress), and the factory calldata that deploys it there: what an
// ERC-6492 wrapper carries. Nothing is deployed.
func (s Sender) CounterfactualWallet(ctx context.Context, factory, owner common.Address, salt common.Hash) (common.Address, []byte, error) {
	out, err := s.Call(ctx, factory, Factory.PackGetAddress(owner, salt))
	if err != nil {
		return common.Address{}, nil, fmt.Errorf("chaintest: getAddress: %w", err)
	}
	wallet, err := Factory.UnpackGetAddress(out)
	if err != nil {
		return common.Address{}, nil, err
	}
	return wallet, Factory.PackCreateAccount(owner, salt), nil
}
