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
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"

	"github.com/tollgate-dev/tollgate/contracts/testusdc"
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

// TestVerifyEIP1271 deploys a one-owner contract wallet (contracts/TestWallet.sol) on the simulated backend and checks
// that signatures by its owner are accepted through eth_call, and others refused.
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

	opts := bind.NewKeyedTransactor(deployer, chainID)
	wallet, _, err := bind.DeployContract(opts, common.FromHex(testusdc.TestWalletMetaData.Bin), client,
		testusdc.NewTestWallet().PackConstructor(crypto.PubkeyToAddress(owner.PublicKey)))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	backend.Commit()

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

// revertingCaller is a fake node that answers every call with a revert.
type revertingCaller struct{}

func (revertingCaller) CallContract(context.Context, uint64, common.Address, []byte) ([]byte, error) {
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
