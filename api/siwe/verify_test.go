package siwe

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"

	"github.com/tollgate-dev/tollgate/settlement/chaintest"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

// personalSign signs text as a wallet's personal_sign does: EIP-191 hash, V as 27/28.
func personalSign(t *testing.T, key *ecdsa.PrivateKey, text string) []byte {
	t.Helper()
	sig, err := crypto.Sign(accounts.TextHash([]byte(text)), key)
	if err != nil {
		t.Fatal(err)
	}
	sig[64] += 27
	return sig
}

func message(addr common.Address, chainID uint64) Message {
	return Message{
		Domain: "pay.example.com", Address: addr, Statement: "Allow Demo to charge this wallet.",
		URI: "https://pay.example.com/connect", Version: "1", ChainID: chainID, Nonce: "abcdef123456",
		IssuedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestVerifyEOA(t *testing.T) {
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := crypto.GenerateKey()
	addr := crypto.PubkeyToAddress(key.PublicKey)
	text := message(addr, 1).String()
	sig := personalSign(t, key, text)
	v := Verifier{}

	lowV := bytes.Clone(sig)
	lowV[64] -= 27
	tampered := strings.Replace(text, "Nonce: abcdef123456", "Nonce: abcdef123457", 1)
	badV := bytes.Clone(sig)
	badV[64] = 29
	tests := []struct {
		name string
		text string
		addr common.Address
		sig  []byte
		want error
	}{
		{"V 27/28", text, addr, sig, nil},
		{"V 0/1", text, addr, lowV, nil},
		{"other signer", text, addr, personalSign(t, other, text), ErrBadSignature},
		{"other address", text, crypto.PubkeyToAddress(other.PublicKey), sig, ErrBadSignature},
		{"tampered message", tampered, addr, sig, ErrBadSignature},
		{"V out of range", text, addr, badV, ErrBadSignature},
		{"short signature", text, addr, sig[:64], ErrBadSignature},
		{"empty signature", text, addr, nil, ErrBadSignature},
		{"garbage", text, addr, bytes.Repeat([]byte{0xff}, 65), ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(t.Context(), tt.text, tt.addr, 1, tt.sig)
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestVerifyEIP1271 deploys a one-owner contract wallet (contracts/TestWallet.sol) on the
// simulated backend and checks that signatures by its owner are accepted through eth_call, and
// others refused.
func TestVerifyEIP1271(t *testing.T) {
	deployer, _ := crypto.GenerateKey()
	owner, _ := crypto.GenerateKey()
	stranger, _ := crypto.GenerateKey()
	deployerAddr := crypto.PubkeyToAddress(deployer.PublicKey)
	backend := simulated.NewBackend(types.GenesisAlloc{deployerAddr: {Balance: big.NewInt(1e18)}})
	t.Cleanup(func() { _ = backend.Close() })
	client := backend.Client()
	chainID, err := client.ChainID(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	send := chaintest.Sender{Client: client, Mine: func() { backend.Commit() }}
	wallet, err := send.DeployTestWallet(t.Context(), deployer, crypto.PubkeyToAddress(owner.PublicKey))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}

	v := Verifier{Contracts: eip1271.Chains{chainID.Uint64(): client}}
	text := message(wallet, chainID.Uint64()).String()
	eoa := crypto.PubkeyToAddress(stranger.PublicKey)
	tests := []struct {
		name    string
		addr    common.Address
		chainID uint64
		sig     []byte
		want    error
	}{
		{"owner's signature", wallet, chainID.Uint64(), personalSign(t, owner, text), nil},
		{"stranger's signature", wallet, chainID.Uint64(), personalSign(t, stranger, text), ErrBadSignature},
		{"wrong length", wallet, chainID.Uint64(), []byte{1, 2, 3}, ErrBadSignature},
		{"EOA without code, wrong signer", eoa, chainID.Uint64(), personalSign(t, owner, text), ErrBadSignature},
		{"chain without a node", wallet, 999, personalSign(t, owner, text), ErrContractCall},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(t.Context(), text, tt.addr, tt.chainID, tt.sig)
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestVerifyERC6492 signs in on anvil with a counterfactual smart account: a TestWallet that
// TestWalletFactory will deploy at a CREATE2 address, with no code yet. The owner's signature
// wrapped as ERC-6492 (factory, createAccount calldata, inner signature, magic suffix) is
// accepted through one deployless eth_call, which deploys nothing; a stranger's key wrapped the
// same way, and a wrapper whose factory call deploys someone else's wallet, are refused; the
// owner's bare signature is refused too (no code to ask). After the wallet is deployed, the
// wrapped and the bare signature are both accepted.
func TestVerifyERC6492(t *testing.T) {
	ctx := t.Context()
	node := chaintest.StartAnvilWithFactory(t, chaintest.AnvilOptions{})
	owner, stranger := chaintest.Key(t), chaintest.Key(t)
	send, factory := node.Send, node.Factory
	wallet, deploy, err := send.CounterfactualWallet(ctx, factory, crypto.PubkeyToAddress(owner.PublicKey), common.Hash{7})
	if err != nil {
		t.Fatal(err)
	}
	_, deployStrangers, err := send.CounterfactualWallet(ctx, factory, crypto.PubkeyToAddress(stranger.PublicKey), common.Hash{7})
	if err != nil {
		t.Fatal(err)
	}
	chainID := node.ChainID.Uint64()
	text := message(wallet, chainID).String()
	wrapped := func(calldata, inner []byte) []byte {
		return eip1271.Wrapped{Factory: factory, FactoryCalldata: calldata, Signature: inner}.Encode()
	}
	v := Verifier{Contracts: eip1271.Chains{chainID: node.Client}}
	verify := func(t *testing.T, sig []byte, want error, why string) {
		t.Helper()
		err := v.Verify(ctx, text, wallet, chainID, sig)
		if !errors.Is(err, want) || (err != nil && !strings.Contains(err.Error(), why)) {
			t.Fatalf("Verify = %v, want %v containing %q", err, want, why)
		}
	}
	for _, tt := range []struct {
		name string
		sig  []byte
		want error
		why  string
	}{
		{"owner's signature, wrapped", wrapped(deploy, personalSign(t, owner, text)), nil, ""},
		{"stranger's signature, wrapped", wrapped(deploy, personalSign(t, stranger, text)), ErrBadSignature, "does not accept it"},
		{"factory call deploys the stranger's wallet", wrapped(deployStrangers, personalSign(t, owner, text)), ErrBadSignature, "does not deploy it"},
		{"owner's bare signature (no code yet)", personalSign(t, owner, text), ErrBadSignature, "does not accept it"},
	} {
		t.Run(tt.name, func(t *testing.T) { verify(t, tt.sig, tt.want, tt.why) })
	}
	if code, err := node.Client.CodeAt(ctx, wallet, nil); err != nil || len(code) != 0 {
		t.Fatalf("verifying deployed the wallet: code %x, %v", code, err)
	}

	if _, err := send.Send(ctx, node.Funded, &factory, deploy); err != nil {
		t.Fatal(err)
	}
	t.Run("deployed: wrapped", func(t *testing.T) { verify(t, wrapped(deploy, personalSign(t, owner, text)), nil, "") })
	t.Run("deployed: bare", func(t *testing.T) { verify(t, personalSign(t, owner, text), nil, "") })
	t.Run("deployed: stranger, wrapped", func(t *testing.T) {
		verify(t, wrapped(deploy, personalSign(t, stranger, text)), ErrBadSignature, "does not accept it")
	})
}

// revertingCaller is a fake node that answers every call with a revert.
type revertingCaller struct{}

func (revertingCaller) CallContract(context.Context, uint64, *common.Address, []byte) ([]byte, error) {
	return nil, eip1271.ErrReverted
}

func TestVerifyRevertIsBadSignature(t *testing.T) {
	v := Verifier{Contracts: revertingCaller{}}
	err := v.Verify(t.Context(), "x", common.Address{1}, 1, []byte{1})
	if !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify = %v, want ErrBadSignature", err)
	}
}

// BenchmarkSignIn measures what one sign-in costs the server: parsing the message, checking
// its fields and recovering the EIP-191 signer, against the baseline of the recovery alone
// (the part no implementation can skip).
func BenchmarkSignIn(b *testing.B) {
	key, _ := crypto.GenerateKey()
	addr := crypto.PubkeyToAddress(key.PublicKey)
	text := message(addr, 137).String()
	sig, _ := crypto.Sign(accounts.TextHash([]byte(text)), key)
	expect := Expect{Domain: "pay.example.com", URI: "https://pay.example.com/connect", ChainIDs: []uint64{137},
		Now: time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)}
	b.Run("baseline=recover", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := crypto.SigToPub(accounts.TextHash([]byte(text)), sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse+check+verify", func(b *testing.B) {
		b.ReportAllocs()
		v := Verifier{}
		for b.Loop() {
			m, err := Parse(text)
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Check(expect); err != nil {
				b.Fatal(err)
			}
			if err := v.Verify(context.Background(), text, m.Address, m.ChainID, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}
