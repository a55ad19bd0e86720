package bindings_test

import (
	"crypto/ecdsa"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/tollgate-dev/tollgate/contracts/bindings"
	"github.com/tollgate-dev/tollgate/settlement"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// tokenEnv is a simulated chain with TestUSDC deployed by owner and 100 USDC minted to alice.
type tokenEnv struct {
	t                       *testing.T
	s                       chaintest.Sender
	client                  simulated.Client
	token                   common.Address
	chain                   settlement.Chain
	owner, alice, bob, carl *ecdsa.PrivateKey
}

func newTokenEnv(t *testing.T) *tokenEnv {
	t.Helper()
	e := &tokenEnv{t: t}
	keys := []**ecdsa.PrivateKey{&e.owner, &e.alice, &e.bob, &e.carl}
	alloc := types.GenesisAlloc{}
	for _, k := range keys {
		key, err := crypto.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		*k = key
		alloc[crypto.PubkeyToAddress(key.PublicKey)] = types.Account{Balance: new(big.Int).Lsh(big.NewInt(1), 100)}
	}
	backend := simulated.NewBackend(alloc)
	t.Cleanup(func() { _ = backend.Close() })
	e.client = backend.Client()
	e.s = chaintest.Sender{Client: e.client, Mine: func() { backend.Commit() }}
	token, err := e.s.DeployToken(t.Context(), e.owner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	e.token = token
	id, _ := e.client.ChainID(t.Context())
	e.chain = settlement.NewChain(id, token, "USD Coin")
	if err := e.s.Mint(t.Context(), e.owner, token, addr(e.alice), 100_000_000); err != nil {
		t.Fatal(err)
	}
	return e
}

func addr(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

func (e *tokenEnv) send(from *ecdsa.PrivateKey, data []byte) *types.Receipt {
	e.t.Helper()
	rcpt, err := e.s.Send(e.t.Context(), from, &e.token, data)
	if err != nil {
		e.t.Fatal(err)
	}
	return rcpt
}

// wantRevert checks that from calling data reverts with a reason containing want.
func (e *tokenEnv) wantRevert(from *ecdsa.PrivateKey, data []byte, want string) {
	e.t.Helper()
	_, err := e.client.CallContract(e.t.Context(), ethereum.CallMsg{From: addr(from), To: &e.token, Data: data}, nil)
	if err == nil || !strings.Contains(err.Error(), want) {
		e.t.Fatalf("call error = %v, want a revert containing %q", err, want)
	}
}

func (e *tokenEnv) balance(k *ecdsa.PrivateKey) int64 {
	e.t.Helper()
	b, err := e.s.BalanceOf(e.t.Context(), e.token, addr(k))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// sign signs a transfer authorization as its From would.
func (e *tokenEnv) sign(key *ecdsa.PrivateKey, a settlement.Authorization) (uint8, [32]byte, [32]byte) {
	e.t.Helper()
	return e.signDigest(key, e.chain.Digest(a).Bytes())
}

// signDigest signs an EIP-712 digest and returns it as the token takes it: v (27 or 28), r, s.
func (e *tokenEnv) signDigest(key *ecdsa.PrivateKey, digest []byte) (uint8, [32]byte, [32]byte) {
	e.t.Helper()
	sig, err := crypto.Sign(digest, key)
	if err != nil {
		e.t.Fatal(err)
	}
	var r, s [32]byte
	copy(r[:], sig[:32])
	copy(s[:], sig[32:64])
	return sig[64] + 27, r, s
}

func (e *tokenEnv) auth(from, to *ecdsa.PrivateKey, micro int64, nonce string) settlement.Authorization {
	return settlement.Authorization{
		From: addr(from), To: addr(to), Value: big.NewInt(micro),
		ValidAfter: 0, ValidBefore: 1 << 40, Nonce: settlement.NonceFor(nonce),
	}
}

// packTWA packs the v,r,s form (abigen numbers overloads in ABI order: it is the second).
func packTWA(a settlement.Authorization, v uint8, r, s [32]byte) []byte {
	return chaintest.Token.PackTransferWithAuthorization0(a.From, a.To, a.Value,
		new(big.Int).SetUint64(a.ValidAfter), new(big.Int).SetUint64(a.ValidBefore), a.Nonce, v, r, s)
}

// packTWABytes packs the bytes form, which contract wallets (EIP-1271) need.
func packTWABytes(a settlement.Authorization, sig []byte) []byte {
	return chaintest.Token.PackTransferWithAuthorization(a.From, a.To, a.Value,
		new(big.Int).SetUint64(a.ValidAfter), new(big.Int).SetUint64(a.ValidBefore), a.Nonce, sig)
}

// TestTransferWithAuthorizationBytes: the bytes form checks as FiatTokenV2_2's SignatureChecker
// does — an EOA's 65-byte ECDSA signature, or for a contract wallet its EIP-1271 answer (here
// TestWallet, owned by bob) — and the v,r,s form asks a contract wallet too, as there.
func TestTransferWithAuthorizationBytes(t *testing.T) {
	e := newTokenEnv(t)
	vrsBytes := func(v uint8, r, s [32]byte) []byte { return append(append(append([]byte{}, r[:]...), s[:]...), v) }

	// An EOA in the bytes form: alice's own signature moves her money once.
	a := e.auth(e.alice, e.bob, 1_000_000, "eoa-bytes")
	v, r, s := e.sign(e.alice, a)
	e.wantRevert(e.carl, packTWABytes(a, vrsBytes(v, r, s)[:64]), "invalid signature length")
	e.send(e.carl, packTWABytes(a, vrsBytes(v, r, s)))
	e.wantRevert(e.carl, packTWABytes(a, vrsBytes(v, r, s)), "authorization is used or canceled")

	// A contract wallet owned by bob, holding 10 USDC.
	wallet, err := e.s.DeployTestWallet(t.Context(), e.owner, addr(e.bob))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Mint(t.Context(), e.owner, e.token, wallet, 10_000_000); err != nil {
		t.Fatal(err)
	}
	w := settlement.Authorization{From: wallet, To: addr(e.carl), Value: big.NewInt(4_000_000), ValidBefore: 1 << 40, Nonce: settlement.NonceFor("wallet")}
	// carl's key is not the owner: the wallet says no.
	cv, cr, cs := e.sign(e.carl, w)
	e.wantRevert(e.carl, packTWABytes(w, vrsBytes(cv, cr, cs)), "invalid signature")
	// bob's is: the wallet says yes, and the logs are AuthorizationUsed(wallet) then Transfer.
	bv, br, bs := e.sign(e.bob, w)
	rcpt := e.send(e.carl, packTWABytes(w, vrsBytes(bv, br, bs)))
	if used, err := chaintest.Token.UnpackAuthorizationUsedEvent(rcpt.Logs[0]); err != nil || used.Authorizer != wallet {
		t.Fatalf("first log: %+v, %v", used, err)
	}
	if tr, err := chaintest.Token.UnpackTransferEvent(rcpt.Logs[1]); err != nil || tr.From != wallet || tr.Value.Int64() != 4_000_000 {
		t.Fatalf("second log: %+v, %v", tr, err)
	}
	e.wantRevert(e.carl, packTWABytes(w, vrsBytes(bv, br, bs)), "authorization is used or canceled")

	// The v,r,s form of a contract wallet's authorization goes to the wallet too (V2_2 packs it).
	w2 := w
	w2.Nonce = settlement.NonceFor("wallet-vrs")
	bv, br, bs = e.sign(e.bob, w2)
	e.send(e.carl, packTWA(w2, bv, br, bs))
	if got, _ := e.s.BalanceOf(t.Context(), e.token, wallet); got != 2_000_000 {
		t.Fatalf("wallet holds %d, want 2000000", got)
	}

	// Once bob hands the wallet to carl, bob's signatures no longer count.
	if _, err := e.s.Send(t.Context(), e.bob, &wallet, chaintest.Wallet.PackSetOwner(addr(e.carl))); err != nil {
		t.Fatal(err)
	}
	w3 := w
	w3.Value, w3.Nonce = big.NewInt(1), settlement.NonceFor("wallet-after")
	bv, br, bs = e.sign(e.bob, w3)
	e.wantRevert(e.carl, packTWABytes(w3, vrsBytes(bv, br, bs)), "invalid signature")
	// The owner can also make the wallet pay by a plain transfer.
	if _, err := e.s.Send(t.Context(), e.carl, &wallet, chaintest.Wallet.PackExecute(e.token, new(big.Int), chaintest.Token.PackTransfer(addr(e.alice), big.NewInt(500_000)))); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.s.BalanceOf(t.Context(), e.token, wallet); got != 1_500_000 {
		t.Fatalf("wallet holds %d after its transfer, want 1500000", got)
	}
}

func TestDomainSeparatorMatchesSettlement(t *testing.T) {
	e := newTokenEnv(t)
	out, err := e.s.Call(t.Context(), e.token, chaintest.Token.PackDOMAINSEPARATOR())
	if err != nil {
		t.Fatal(err)
	}
	got, err := chaintest.Token.UnpackDOMAINSEPARATOR(out)
	if err != nil {
		t.Fatal(err)
	}
	if common.Hash(got) != e.chain.DomainSeparator() {
		t.Fatalf("on-chain domain separator %x, settlement computes %x", got, e.chain.DomainSeparator())
	}
}

func TestTransferWithAuthorization(t *testing.T) {
	e := newTokenEnv(t)
	a := e.auth(e.alice, e.bob, 2_500_000, "topup-1")
	v, r, s := e.sign(e.alice, a)

	// carl relays and pays the gas; the money goes from alice to bob.
	rcpt := e.send(e.carl, packTWA(a, v, r, s))
	if got := e.balance(e.bob); got != 2_500_000 {
		t.Fatalf("bob has %d, want 2500000", got)
	}
	if got := e.balance(e.alice); got != 97_500_000 {
		t.Fatalf("alice has %d, want 97500000", got)
	}
	// AuthorizationUsed comes right before its Transfer in the receipt.
	if len(rcpt.Logs) != 2 {
		t.Fatalf("receipt has %d logs, want 2", len(rcpt.Logs))
	}
	used, err := chaintest.Token.UnpackAuthorizationUsedEvent(rcpt.Logs[0])
	if err != nil || used.Authorizer != a.From || used.Nonce != a.Nonce {
		t.Fatalf("first log is not AuthorizationUsed(alice, nonce): %+v, %v", used, err)
	}
	tr, err := chaintest.Token.UnpackTransferEvent(rcpt.Logs[1])
	if err != nil || tr.From != a.From || tr.To != a.To || tr.Value.Int64() != 2_500_000 {
		t.Fatalf("second log is not the Transfer: %+v, %v", tr, err)
	}
	out, _ := e.s.Call(t.Context(), e.token, chaintest.Token.PackAuthorizationState(a.From, a.Nonce))
	if state, _ := chaintest.Token.UnpackAuthorizationState(out); !state {
		t.Fatal("authorizationState is false after use")
	}
	// The same authorization cannot move money twice.
	e.wantRevert(e.carl, packTWA(a, v, r, s), "authorization is used or canceled")

	// A signature by someone else, or for other values, is refused.
	b := e.auth(e.alice, e.bob, 1, "topup-2")
	bv, br, bs := e.sign(e.bob, b)
	e.wantRevert(e.carl, packTWA(b, bv, br, bs), "invalid signature")
	bv, br, bs = e.sign(e.alice, b)
	b.Value = big.NewInt(2)
	e.wantRevert(e.carl, packTWA(b, bv, br, bs), "invalid signature")
}

func TestAuthorizationWindowAndMalleability(t *testing.T) {
	e := newTokenEnv(t)
	a := e.auth(e.alice, e.bob, 1, "expired")
	a.ValidBefore = 1000 // long past
	v, r, s := e.sign(e.alice, a)
	e.wantRevert(e.carl, packTWA(a, v, r, s), "authorization is expired")

	a = e.auth(e.alice, e.bob, 1, "future")
	a.ValidAfter = 1 << 39
	v, r, s = e.sign(e.alice, a)
	e.wantRevert(e.carl, packTWA(a, v, r, s), "not yet valid")

	// The high-s twin of a valid signature is refused.
	a = e.auth(e.alice, e.bob, 1, "malleable")
	v, r, s = e.sign(e.alice, a)
	n := crypto.S256().Params().N
	highS := new(big.Int).Sub(n, new(big.Int).SetBytes(s[:]))
	var hs [32]byte
	highS.FillBytes(hs[:])
	e.wantRevert(e.carl, packTWA(a, 55-v, r, hs), "invalid signature 's' value")
	e.send(e.carl, packTWA(a, v, r, s))
}

func TestReceiveAndCancelAuthorization(t *testing.T) {
	e := newTokenEnv(t)
	a := e.auth(e.alice, e.bob, 1_000_000, "receive")
	// ReceiveWithAuthorization has its own type hash, so a transfer signature does not fit.
	structHash := crypto.Keccak256Hash(
		crypto.Keccak256([]byte("ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")),
		common.LeftPadBytes(a.From.Bytes(), 32), common.LeftPadBytes(a.To.Bytes(), 32),
		common.LeftPadBytes(a.Value.Bytes(), 32), common.LeftPadBytes(new(big.Int).SetUint64(a.ValidAfter).Bytes(), 32),
		common.LeftPadBytes(new(big.Int).SetUint64(a.ValidBefore).Bytes(), 32), a.Nonce.Bytes())
	v, r, s := e.signDigest(e.alice, crypto.Keccak256([]byte("\x19\x01"), e.chain.DomainSeparator().Bytes(), structHash.Bytes()))
	data := chaintest.Token.PackReceiveWithAuthorization(a.From, a.To, a.Value,
		new(big.Int).SetUint64(a.ValidAfter), new(big.Int).SetUint64(a.ValidBefore), a.Nonce, v, r, s)
	e.wantRevert(e.carl, data, "caller must be the payee")
	e.send(e.bob, data)
	if got := e.balance(e.bob); got != 1_000_000 {
		t.Fatalf("bob has %d, want 1000000", got)
	}

	// Cancel an unused authorization; it can then never be used.
	c := e.auth(e.alice, e.bob, 5, "cancel-me")
	cancelHash := crypto.Keccak256Hash(
		crypto.Keccak256([]byte("CancelAuthorization(address authorizer,bytes32 nonce)")),
		common.LeftPadBytes(c.From.Bytes(), 32), c.Nonce.Bytes())
	digest := crypto.Keccak256Hash([]byte("\x19\x01"), e.chain.DomainSeparator().Bytes(), cancelHash.Bytes())
	cv, cr, cs := e.signDigest(e.alice, digest.Bytes())
	e.send(e.carl, chaintest.Token.PackCancelAuthorization(c.From, c.Nonce, cv, cr, cs))
	tv, tr, ts := e.sign(e.alice, c)
	e.wantRevert(e.carl, packTWA(c, tv, tr, ts), "authorization is used or canceled")
}

func TestPermit(t *testing.T) {
	e := newTokenEnv(t)
	id, _ := e.client.ChainID(t.Context())
	td := apitypes.TypedData{
		Types: apitypes.Types{
			"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}, {Name: "chainId", Type: "uint256"}, {Name: "verifyingContract", Type: "address"}},
			"Permit":       {{Name: "owner", Type: "address"}, {Name: "spender", Type: "address"}, {Name: "value", Type: "uint256"}, {Name: "nonce", Type: "uint256"}, {Name: "deadline", Type: "uint256"}},
		},
		PrimaryType: "Permit",
		Domain:      apitypes.TypedDataDomain{Name: "USD Coin", Version: "2", ChainId: (*math.HexOrDecimal256)(id), VerifyingContract: e.token.Hex()},
		Message: apitypes.TypedDataMessage{
			"owner": addr(e.alice).Hex(), "spender": addr(e.carl).Hex(), "value": "777", "nonce": "0", "deadline": "1099511627776",
		},
	}
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	v, r, s := e.signDigest(e.alice, digest)
	e.send(e.carl, chaintest.Token.PackPermit(addr(e.alice), addr(e.carl), big.NewInt(777), big.NewInt(1<<40), v, r, s))
	out, _ := e.s.Call(t.Context(), e.token, chaintest.Token.PackAllowance(addr(e.alice), addr(e.carl)))
	if got, _ := chaintest.Token.UnpackAllowance(out); got.Int64() != 777 {
		t.Fatalf("allowance %s, want 777", got)
	}
	// The permit's nonce moved on: the same signature cannot be replayed.
	e.wantRevert(e.carl, chaintest.Token.PackPermit(addr(e.alice), addr(e.carl), big.NewInt(777), big.NewInt(1<<40), v, r, s), "invalid signature")
	e.send(e.carl, chaintest.Token.PackTransferFrom(addr(e.alice), addr(e.bob), big.NewInt(700)))
	if got := e.balance(e.bob); got != 700 {
		t.Fatalf("bob has %d, want 700", got)
	}
}

func TestPauseAndBlacklist(t *testing.T) {
	e := newTokenEnv(t)
	transfer := chaintest.Token.PackTransfer(addr(e.bob), big.NewInt(1))
	a := e.auth(e.alice, e.bob, 1, "while-paused")
	v, r, s := e.sign(e.alice, a)

	e.send(e.owner, chaintest.Token.PackPause())
	e.wantRevert(e.alice, transfer, "Pausable: paused")
	e.wantRevert(e.carl, packTWA(a, v, r, s), "Pausable: paused")
	e.send(e.owner, chaintest.Token.PackUnpause())

	e.send(e.owner, chaintest.Token.PackBlacklist(addr(e.bob)))
	e.wantRevert(e.alice, transfer, "Blacklistable: account is blacklisted")
	e.wantRevert(e.carl, packTWA(a, v, r, s), "Blacklistable: account is blacklisted")
	e.send(e.owner, chaintest.Token.PackUnBlacklist(addr(e.bob)))
	e.send(e.alice, transfer)

	// Like FiatToken v2.2, the token refuses transfers to itself.
	e.wantRevert(e.alice, chaintest.Token.PackTransfer(e.token, big.NewInt(1)), "Blacklistable: account is blacklisted")
	// Only the pauser pauses.
	e.wantRevert(e.alice, chaintest.Token.PackPause(), "caller is not the pauser")
	e.wantRevert(e.alice, chaintest.Token.PackTransfer(addr(e.bob), big.NewInt(1_000_000_000)), "transfer amount exceeds balance")
}

func TestBindingBytecodeIsTheBuild(t *testing.T) {
	bin := strings.TrimSpace(string(readFile(t, "../build/TestUSDC.bin")))
	if bindings.TestUSDCMetaData.Bin != "0x"+bin {
		t.Fatal("binding bytecode differs from build/TestUSDC.bin")
	}
	if _, err := hexutil.Decode(bindings.TestUSDCMetaData.Bin); err != nil {
		t.Fatal(err)
	}
}
