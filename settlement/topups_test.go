package settlement

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
	"github.com/tollgate-dev/tollgate/settlement/eip1271"
	"github.com/tollgate-dev/tollgate/settlement/schema"
)

// fakeClock is the test's clock; it moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testChain is a chain whose token lives at a fixed address; signatures over it are checked
// off chain here, and on chain in the worker tests.
func testChain() Chain {
	return NewChain(big.NewInt(1337), common.HexToAddress("0x00000000000000000000000000000000000000aa"), "USD Coin")
}

// signHex signs an authorization as a wallet's eth_signTypedData_v4 would: r‖s‖v, v = 27/28.
func signHex(t testing.TB, c Chain, key *ecdsa.PrivateKey, a Authorization) string {
	t.Helper()
	sa, err := signAuthorization(t.Context(), NewLocalSignerFromKey(key), c, a)
	if err != nil {
		t.Fatal(err)
	}
	return sa.SignatureHex()
}

type topUpEnv struct {
	db       *testdb.DB
	clock    *fakeClock
	chain    Chain
	treasury common.Address
	topups   *TopUps
	user     *ecdsa.PrivateKey
}

func newTopUpEnv(t *testing.T) *topUpEnv {
	t.Helper()
	e := &topUpEnv{
		db:       testdb.New(t, schema.Migrations),
		clock:    newFakeClock(),
		chain:    testChain(),
		treasury: crypto.PubkeyToAddress(chaintest.Key(t).PublicKey),
		user:     chaintest.Key(t),
	}
	var err error
	e.topups, err = NewTopUps(e.db.Pool, []Chain{e.chain}, e.treasury.Hex(), TopUpOptions{Clock: e.clock, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *topUpEnv) wallet() common.Address { return crypto.PubkeyToAddress(e.user.PublicKey) }

// intentAuthorization decodes the typed data the page gets back into an authorization.
func intentAuthorization(t *testing.T, in TopUpIntent) Authorization {
	t.Helper()
	var td typedData
	if err := json.Unmarshal(in.TypedData, &td); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"authorization": td.Message, "signature": "0x" + strings.Repeat("11", 64) + "1b"})
	sa, err := DecodeAuthorizationPayload(payload)
	if err != nil {
		t.Fatalf("typed data message does not decode: %v", err)
	}
	return sa.Authorization
}

func TestCreateTopUp(t *testing.T) {
	e := newTopUpEnv(t)
	in, err := e.topups.Create(t.Context(), TopUpRequest{Wallet: e.wallet().Hex(), AmountMicro: 5_000_000, PaywallID: "pw", UserID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	a := intentAuthorization(t, in)
	want := Authorization{
		From: e.wallet(), To: e.treasury, Value: big.NewInt(5_000_000),
		ValidAfter:  uint64(e.clock.Now().Add(-validAfterSlack).Unix()),
		ValidBefore: uint64(e.clock.Now().Add(time.Hour).Unix()),
		Nonce:       crypto.Keccak256Hash([]byte(in.ID)),
	}
	if err := matchIntent(want, a); err != nil {
		t.Fatalf("intent's authorization: %v", err)
	}
	if !in.ValidBefore.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("ValidBefore %s, want an hour from now", in.ValidBefore)
	}

	// The typed data is standard EIP-712: go-ethereum's implementation hashes it to our digest.
	var td apitypes.TypedData
	if err := json.Unmarshal(in.TypedData, &td); err != nil {
		t.Fatal(err)
	}
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	if common.BytesToHash(digest) != e.chain.Digest(a) {
		t.Fatalf("apitypes digest %x != ours %x", digest, e.chain.Digest(a))
	}

	got, err := e.topups.Get(t.Context(), in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != TopUpAwaitingSignature || got.AmountMicro != 5_000_000 || got.Wallet != strings.ToLower(e.wallet().Hex()) || got.UserID != "u1" || got.ChainID != "1337" {
		t.Fatalf("stored top-up %+v", got)
	}
	again, err := e.topups.Intent(t.Context(), in.ID)
	if err != nil || string(again.TypedData) != string(in.TypedData) {
		t.Fatalf("Intent: %v, typed data changed", err)
	}
}

func TestCreateTopUpRejects(t *testing.T) {
	e := newTopUpEnv(t)
	w := e.wallet().Hex()
	tests := []struct {
		name string
		req  TopUpRequest
		want error
	}{
		{"bad wallet", TopUpRequest{Wallet: "0x1234", AmountMicro: 1_000_000}, ErrInvalidTopUp},
		{"wallet without 0x", TopUpRequest{Wallet: strings.TrimPrefix(w, "0x"), AmountMicro: 1_000_000}, ErrInvalidTopUp},
		{"zero amount", TopUpRequest{Wallet: w, AmountMicro: 0}, ErrInvalidTopUp},
		{"below minimum", TopUpRequest{Wallet: w, AmountMicro: 99_999}, ErrInvalidTopUp},
		{"above maximum", TopUpRequest{Wallet: w, AmountMicro: 10_000_000_001}, ErrInvalidTopUp},
		{"negative", TopUpRequest{Wallet: w, AmountMicro: -5}, ErrInvalidTopUp},
		{"unknown chain", TopUpRequest{Wallet: w, AmountMicro: 1_000_000, ChainID: "137"}, ErrUnknownChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.topups.Create(t.Context(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	var n int
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM settlement_topups`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d top-ups stored after rejected requests (%v)", n, err)
	}
}

func TestSubmitTopUp(t *testing.T) {
	e := newTopUpEnv(t)
	in, err := e.topups.Create(t.Context(), TopUpRequest{Wallet: e.wallet().Hex(), AmountMicro: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	a := intentAuthorization(t, in)
	good := signHex(t, e.chain, e.user, a)
	other := signHex(t, e.chain, chaintest.Key(t), a)
	more := a
	more.Value = big.NewInt(2_000_000)
	otherAmount := signHex(t, e.chain, e.user, more)
	otherChain := signHex(t, NewChain(big.NewInt(137), e.chain.Token, "USD Coin"), e.user, a)

	for _, tt := range []struct {
		name, id, sig string
		want          error
	}{
		{"unknown id", "6f1c1c59-1b43-4f58-9d7c-5a3d9a0b7f10", good, ErrTopUpNotFound},
		{"not a uuid", "'; DROP TABLE x", good, ErrTopUpNotFound},
		{"not hex", in.ID, "0xzz", ErrBadSignature},
		{"short", in.ID, good[:100], ErrBadSignature},
		{"signed by someone else", in.ID, other, ErrBadSignature},
		{"signed another amount", in.ID, otherAmount, ErrBadSignature},
		{"signed for another chain", in.ID, otherChain, ErrBadSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.topups.Submit(t.Context(), tt.id, tt.sig); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	got, err := e.topups.Get(t.Context(), in.ID)
	if err != nil || got.Status != TopUpAwaitingSignature {
		t.Fatalf("after bad signatures: %+v, %v", got, err)
	}

	// v as 0/1 (some hardware wallets) is the same signature.
	lowV := good[:len(good)-2] + fmt.Sprintf("%02x", mustHexByte(t, good[len(good)-2:])-27)
	got, err = e.topups.Submit(t.Context(), in.ID, lowV)
	if err != nil || got.Status != TopUpSigned {
		t.Fatalf("Submit: %+v, %v", got, err)
	}
	// Submitting again is harmless and returns the state.
	got, err = e.topups.Submit(t.Context(), in.ID, good)
	if err != nil || got.Status != TopUpSigned {
		t.Fatalf("second Submit: %+v, %v", got, err)
	}
	// …but a bad signature is still refused.
	if _, err := e.topups.Submit(t.Context(), in.ID, other); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad signature after success: %v", err)
	}
}

func mustHexByte(t *testing.T, s string) byte {
	t.Helper()
	var b byte
	if _, err := fmt.Sscanf(s, "%02x", &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSubmitExpiredTopUp(t *testing.T) {
	e := newTopUpEnv(t)
	in, err := e.topups.Create(t.Context(), TopUpRequest{Wallet: e.wallet().Hex(), AmountMicro: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	sig := signHex(t, e.chain, e.user, intentAuthorization(t, in))
	e.clock.Advance(time.Hour - submitMargin + time.Second)
	if _, err := e.topups.Submit(t.Context(), in.ID, sig); !errors.Is(err, ErrTopUpExpired) {
		t.Fatalf("err = %v, want ErrTopUpExpired", err)
	}
}

func TestSubmitAuthorizationPayload(t *testing.T) {
	e := newTopUpEnv(t)
	in, err := e.topups.Create(t.Context(), TopUpRequest{Wallet: e.wallet().Hex(), AmountMicro: 3_000_000})
	if err != nil {
		t.Fatal(err)
	}
	intent := intentAuthorization(t, in)
	payload := func(a Authorization, key *ecdsa.PrivateKey) []byte {
		b, _ := json.Marshal(map[string]any{"authorization": toJSON(a), "signature": signHex(t, e.chain, key, a)})
		return b
	}
	mutate := func(f func(*Authorization)) Authorization {
		a := intent
		a.Value = new(big.Int).Set(intent.Value)
		f(&a)
		return a
	}
	for _, tt := range []struct {
		name    string
		payload []byte
		want    error
	}{
		{"to is not the treasury", payload(mutate(func(a *Authorization) { a.To = crypto.PubkeyToAddress(chaintest.Key(t).PublicKey) }), e.user), ErrAuthorizationMismatch},
		{"more money", payload(mutate(func(a *Authorization) { a.Value = big.NewInt(3_000_001) }), e.user), ErrAuthorizationMismatch},
		{"less money", payload(mutate(func(a *Authorization) { a.Value = big.NewInt(1) }), e.user), ErrAuthorizationMismatch},
		{"longer window", payload(mutate(func(a *Authorization) { a.ValidBefore += 86400 }), e.user), ErrAuthorizationMismatch},
		{"other nonce", payload(mutate(func(a *Authorization) { a.Nonce = NonceFor("other") }), e.user), ErrAuthorizationMismatch},
		{"other from", payload(mutate(func(a *Authorization) { a.From = e.treasury }), e.user), ErrAuthorizationMismatch},
		{"right fields, wrong signer", payload(intent, chaintest.Key(t)), ErrBadSignature},
		{"not json", []byte("{"), ErrBadAuthorization},
		{"missing signature", []byte(`{"authorization":{}}`), ErrBadAuthorization},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.topups.SubmitAuthorization(t.Context(), in.ID, tt.payload); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	got, err := e.topups.SubmitAuthorization(t.Context(), in.ID, payload(intent, e.user))
	if err != nil || got.Status != TopUpSigned {
		t.Fatalf("SubmitAuthorization: %+v, %v", got, err)
	}
}

// TestSignatureForms: ParseSignature takes any signature's bytes as they are (a contract
// wallet's may have any length); ECDSA takes an EOA's r‖s‖v as the token does.
func TestSignatureForms(t *testing.T) {
	valid := "0x" + strings.Repeat("11", 32) + strings.Repeat("22", 32) + "1c"
	highS := "0x" + strings.Repeat("11", 32) + "ff" + strings.Repeat("22", 31) + "1b"
	for _, tt := range []struct {
		name, sig    string
		parse, ecdsa bool
	}{
		{"valid", valid, true, true},
		{"no 0x", valid[2:], true, true},
		{"v=1", valid[:130] + "01", true, true},
		{"v=2", valid[:130] + "02", true, false},
		{"v=29", valid[:130] + "1d", true, false},
		{"high s", highS, true, false},
		{"zero r", "0x" + strings.Repeat("00", 32) + strings.Repeat("22", 32) + "1b", true, false},
		{"66 bytes (a contract wallet's)", valid + "00", true, false},
		{"3 owners of a Safe", "0x" + strings.Repeat(valid[2:], 3), true, false},
		{"one byte", "0x01", true, false},
		{"largest", "0x" + strings.Repeat("ab", maxSignatureBytes), true, false},
		{"too long", "0x" + strings.Repeat("ab", maxSignatureBytes+1), false, false},
		{"odd digits", valid + "0", false, false},
		{"not hex", "0xzz", false, false},
		{"empty", "", false, false},
		{"0x only", "0x", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sig, err := ParseSignature(tt.sig)
			if tt.parse != (err == nil) {
				t.Fatalf("ParseSignature err = %v, want ok=%v", err, tt.parse)
			}
			if err != nil {
				if !errors.Is(err, ErrBadSignature) {
					t.Fatalf("err %v is not ErrBadSignature", err)
				}
				return
			}
			sa := SignedAuthorization{Signature: sig}
			if got, want := sa.SignatureHex(), "0x"+strings.ToLower(strings.TrimPrefix(tt.sig, "0x")); got != want {
				t.Fatalf("SignatureHex %s, want the bytes as they came %s", got, want)
			}
			v, _, _, err := sa.ECDSA()
			if tt.ecdsa != (err == nil) {
				t.Fatalf("ECDSA err = %v, want ok=%v", err, tt.ecdsa)
			}
			if err != nil && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("err %v is not ErrBadSignature", err)
			}
			if err == nil && v != 27 && v != 28 {
				t.Fatalf("v = %d", v)
			}
		})
	}
}

// walletNode is a fake chain node at the EIP-1271 boundary: it answers isValidSignature with
// yes or no, or fails as a node that cannot be reached.
type walletNode struct {
	yes  bool
	down bool
}

func (n walletNode) CallContract(context.Context, uint64, *common.Address, []byte) ([]byte, error) {
	switch {
	case n.down:
		return nil, errors.New("dial tcp: connection refused")
	case n.yes:
		return common.RightPadBytes([]byte{0x16, 0x26, 0xba, 0x7e}, 32), nil
	}
	return common.RightPadBytes([]byte{0xff, 0xff, 0xff, 0xff}, 32), nil
}

// TestSubmitContractWalletSignature: a signature that is not the wallet's own ECDSA one is
// refused without a node to ask, taken as it is when the wallet (EIP-1271) says yes, refused
// when it says no, and a node that cannot be asked is ErrContractCall, not a bad signature.
// (TestAnvilContractWalletTopUp does the same through a real node and token.)
func TestSubmitContractWalletSignature(t *testing.T) {
	e := newTopUpEnv(t)
	wallet := common.HexToAddress("0x00000000000000000000000000000000000000cc")
	sig := "0x" + strings.Repeat("5a", 200) // a Safe-like signature: no key recovers to the wallet
	for _, tt := range []struct {
		name   string
		caller eip1271.ContractCaller
		want   error
		text   string
	}{
		{"no node to ask", nil, ErrBadSignature, "cannot be checked here"},
		{"the wallet says no", walletNode{}, ErrBadSignature, "does not accept it as a contract wallet"},
		{"the node is down", walletNode{down: true}, ErrContractCall, "connection refused"},
		{"the wallet says yes", walletNode{yes: true}, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			topups, err := NewTopUps(e.db.Pool, []Chain{e.chain}, e.treasury.Hex(), TopUpOptions{Clock: e.clock, Contracts: tt.caller})
			if err != nil {
				t.Fatal(err)
			}
			in, err := topups.Create(t.Context(), TopUpRequest{Wallet: wallet.Hex(), AmountMicro: 1_000_000})
			if err != nil {
				t.Fatal(err)
			}
			got, err := topups.Submit(t.Context(), in.ID, sig)
			if !errors.Is(err, tt.want) || (err != nil && !strings.Contains(err.Error(), tt.text)) {
				t.Fatalf("Submit = %v, want %v containing %q", err, tt.want, tt.text)
			}
			row, _ := loadTopUp(t.Context(), e.db.Pool, in.ID)
			if tt.want != nil {
				if row.status != TopUpAwaitingSignature {
					t.Fatalf("refused signature left the top-up %s", row.status)
				}
				return
			}
			if got.Status != TopUpSigned || row.signature != sig {
				t.Fatalf("top-up %s with signature %s, want signed with the bytes as given", got.Status, row.signature)
			}
		})
	}
}
