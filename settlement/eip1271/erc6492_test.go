package eip1271_test

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tollgate-dev/tollgate/settlement/chaintest"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

func word(n uint64) []byte { return common.LeftPadBytes(new(big.Int).SetUint64(n).Bytes(), 32) }

// TestParseWrapped reads wrappers as Solidity's abi.decode would, and refuses what it would
// refuse (or what does not end with the suffix).
func TestParseWrapped(t *testing.T) {
	want := eip1271.Wrapped{Factory: common.HexToAddress("0x00000000000000000000000000000000000000fa"),
		FactoryCalldata: []byte{1, 2, 3, 4, 5}, Signature: bytes.Repeat([]byte{7}, 65)}
	canonical := want.Encode()
	// The same parts at other (valid) offsets: the signature first, then the calldata.
	reordered := bytes.Join([][]byte{
		common.LeftPadBytes(want.Factory.Bytes(), 32), word(96 + 32 + 96), word(96),
		word(65), common.RightPadBytes(want.Signature, 96),
		word(5), common.RightPadBytes(want.FactoryCalldata, 32), eip1271.Suffix,
	}, nil)
	withBody := func(body ...[]byte) []byte { return append(bytes.Join(body, nil), eip1271.Suffix...) }
	addr := common.LeftPadBytes(want.Factory.Bytes(), 32)
	for _, tt := range []struct {
		name string
		sig  []byte
		ok   bool
	}{
		{"canonical", canonical, true},
		{"other offsets", reordered, true},
		{"empty parts", eip1271.Wrapped{Factory: want.Factory}.Encode(), true},
		{"no suffix", canonical[:len(canonical)-1], false},
		{"suffix only", eip1271.Suffix, false},
		{"short head", withBody(addr, word(96)), false},
		{"dirty address word", withBody(bytes.Repeat([]byte{1}, 32), word(96), word(128), word(0), word(0)), false},
		{"offset past the end", withBody(addr, word(4096), word(96), word(0)), false},
		{"offset that does not fit 32 bits", withBody(addr, append([]byte{1}, make([]byte, 31)...), word(96), word(0)), false},
		{"length past the end", withBody(addr, word(96), word(96), word(33), make([]byte, 32)), false},
		{"huge length", withBody(addr, word(96), word(96), bytes.Repeat([]byte{0xff}, 32)), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := eip1271.ParseWrapped(tt.sig)
			if !tt.ok {
				if !errors.Is(err, eip1271.ErrMalformedWrapper) {
					t.Fatalf("ParseWrapped = %+v, %v; want ErrMalformedWrapper", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "empty parts" {
				if len(got.FactoryCalldata) != 0 || len(got.Signature) != 0 || got.Factory != want.Factory {
					t.Fatalf("got %+v", got)
				}
				return
			}
			if got.Factory != want.Factory || !bytes.Equal(got.FactoryCalldata, want.FactoryCalldata) || !bytes.Equal(got.Signature, want.Signature) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
	if eip1271.IsWrapped(bytes.Repeat([]byte{0x64}, 65)) || !eip1271.IsWrapped(canonical) {
		t.Error("IsWrapped is wrong about a plain signature or a wrapper")
	}
}

// FuzzParseWrapped: any input (a wallet's signature is outside input) is either refused with
// ErrMalformedWrapper or taken apart into parts that stay within it, and what Encode makes of
// those parts parses back to them.
func FuzzParseWrapped(f *testing.F) {
	f.Add(eip1271.Wrapped{Factory: common.Address{1}, FactoryCalldata: []byte{1, 2}, Signature: make([]byte, 65)}.Encode())
	f.Add(eip1271.Wrapped{}.Encode())
	f.Add(eip1271.Suffix)
	f.Add(append(make([]byte, 96), eip1271.Suffix...))
	f.Fuzz(func(t *testing.T, sig []byte) {
		w, err := eip1271.ParseWrapped(sig)
		if err != nil {
			if !errors.Is(err, eip1271.ErrMalformedWrapper) {
				t.Fatalf("error %v is not ErrMalformedWrapper", err)
			}
			return
		}
		if !eip1271.IsWrapped(sig) || len(w.FactoryCalldata)+len(w.Signature)+3*32+len(eip1271.Suffix) > len(sig) {
			t.Fatalf("parsed %d bytes into %+v", len(sig), w)
		}
		again, err := eip1271.ParseWrapped(w.Encode())
		if err != nil || again.Factory != w.Factory || !bytes.Equal(again.FactoryCalldata, w.FactoryCalldata) || !bytes.Equal(again.Signature, w.Signature) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, w)
		}
	})
}

// TestCheckOnAnvil asks a real node (anvil) with the real validator, factory and wallet: a
// counterfactual wallet's wrapped signature by its owner is accepted before the wallet has
// code (and the deployless call leaves it without code); a stranger's inner signature, a
// factory call that deploys another wallet, a factory call that reverts and a deployment
// allowed less gas than it needs are refused with their verdicts; once the wallet is
// deployed the same wrapper is still accepted (unwrapped, the factory not called), and so is
// the plain inner signature.
func TestCheckOnAnvil(t *testing.T) {
	ctx := t.Context()
	node := chaintest.StartAnvilWithFactory(t, chaintest.AnvilOptions{})
	owner, stranger := chaintest.Key(t), chaintest.Key(t)
	send, factory, deployer := node.Send, node.Factory, node.Funded
	ownerAddr := crypto.PubkeyToAddress(owner.PublicKey)
	wallet, deploy, err := send.CounterfactualWallet(ctx, factory, ownerAddr, common.Hash{1})
	if err != nil {
		t.Fatal(err)
	}
	_, deployOther, err := send.CounterfactualWallet(ctx, factory, crypto.PubkeyToAddress(stranger.PublicKey), common.Hash{1})
	if err != nil {
		t.Fatal(err)
	}
	hash := crypto.Keccak256Hash([]byte("what the wallet signs"))
	sign := func(k *ecdsa.PrivateKey) []byte {
		sig, err := crypto.Sign(hash[:], k)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	wrap := func(to common.Address, calldata, inner []byte) []byte {
		return eip1271.Wrapped{Factory: to, FactoryCalldata: calldata, Signature: inner}.Encode()
	}
	chains := eip1271.Chains{node.ChainID.Uint64(): node.Client}
	check := func(t *testing.T, sig []byte, want eip1271.Verdict) {
		t.Helper()
		got, err := eip1271.Check(ctx, chains, node.ChainID.Uint64(), wallet, hash, sig, eip1271.MaxDeployGas)
		if err != nil || got != want {
			t.Fatalf("Check = %v, %v; want %v", got, err, want)
		}
	}
	for _, tt := range []struct {
		name string
		sig  []byte
		want eip1271.Verdict
	}{
		{"owner's inner signature", wrap(factory, deploy, sign(owner)), eip1271.Accepted},
		{"stranger's inner signature", wrap(factory, deploy, sign(stranger)), eip1271.Refused},
		{"factory call deploys another wallet", wrap(factory, deployOther, sign(owner)), eip1271.NotDeployed},
		{"factory call reverts", wrap(factory, []byte{0xde, 0xad, 0xbe, 0xef}, sign(owner)), eip1271.FactoryFailed},
		{"factory is not a contract", wrap(common.Address{0xee}, deploy, sign(owner)), eip1271.NotDeployed},
		{"not a wrapper", append(bytes.Repeat([]byte{1}, 40), eip1271.Suffix...), eip1271.Malformed},
		{"plain signature of a wallet without code", sign(owner), eip1271.Refused},
	} {
		t.Run(tt.name, func(t *testing.T) { check(t, tt.sig, tt.want) })
	}
	// The gas bound: the same good wrapper, but a deployment allowed less gas than it needs.
	need, err := node.Client.EstimateGas(ctx, ethereum.CallMsg{To: &factory, Data: deploy})
	if err != nil || need < 100_000 || need > eip1271.MaxDeployGas {
		t.Fatalf("createAccount needs %d gas (%v): the bound below tests nothing", need, err)
	}
	if got, err := eip1271.Check(ctx, chains, node.ChainID.Uint64(), wallet, hash, wrap(factory, deploy, sign(owner)), need/2); err != nil || got != eip1271.FactoryFailed {
		t.Fatalf("deployment with half the gas it needs: %v, %v; want FactoryFailed", got, err)
	}
	if code, err := node.Client.CodeAt(ctx, wallet, nil); err != nil || len(code) != 0 {
		t.Fatalf("the deployless calls left code at the wallet: %x, %v", code, err)
	}

	// Deployed (by anyone): the wrapper is unwrapped and the wallet asked directly.
	if _, err := send.Send(ctx, deployer, &factory, deploy); err != nil {
		t.Fatal(err)
	}
	check(t, wrap(factory, deploy, sign(owner)), eip1271.Accepted)
	check(t, wrap(common.Address{0xee}, nil, sign(owner)), eip1271.Accepted) // the factory is not called
	check(t, wrap(factory, deploy, sign(stranger)), eip1271.Refused)
	check(t, sign(owner), eip1271.Accepted)
}
