package settlement

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// fakeRemoteSigner is a stand-in for a remote signer's JSON-RPC API (the process boundary),
// for what a real one cannot be made to do: sign something other than what it was asked, or
// with another key. It knows eth_accounts, eth_signTransaction and, like Web3Signer, the
// typed-data method under the name eth_signTypedData only. The honest paths run against anvil
// (TestAnvilTopUpAndPayout).
type fakeRemoteSigner struct {
	hot, other *ecdsa.PrivateKey
	lie        string // "nonce": sign the next nonce; "key": sign with other; "": sign what is asked
	digest     common.Hash
}

func (f *fakeRemoteSigner) Accounts() []common.Address { return []common.Address{addrOf(f.hot)} }

func (f *fakeRemoteSigner) SignTransaction(a txArgs) (hexutil.Bytes, error) {
	key, nonce := f.hot, uint64(a.Nonce)
	switch f.lie {
	case "nonce":
		nonce++
	case "key":
		key = f.other
	}
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: a.ChainID.ToInt(), Nonce: nonce, GasTipCap: a.MaxPriorityFeePerGas.ToInt(),
		GasFeeCap: a.MaxFeePerGas.ToInt(), Gas: uint64(a.Gas), To: a.To, Value: a.Value.ToInt(), Data: a.Input})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(a.ChainID.ToInt()), key)
	if err != nil {
		return nil, err
	}
	return signed.MarshalBinary()
}

// SignTypedData answers eth_signTypedData as Web3Signer does: the typed data comes as a JSON
// string (an object is refused as invalid params). It signs the digest the test set (the typed
// data itself is the anvil test's to check), after checking that the string is that typed data.
func (f *fakeRemoteSigner) SignTypedData(_ common.Address, typedData string) (hexutil.Bytes, error) {
	if !json.Valid([]byte(typedData)) || !strings.Contains(typedData, `"primaryType":"TransferWithAuthorization"`) {
		return nil, errors.New("not the typed data of an authorization")
	}
	key := f.hot
	if f.lie == "key" {
		key = f.other
	}
	sig, err := crypto.Sign(f.digest.Bytes(), key)
	if err != nil {
		return nil, err
	}
	sig[64] += 27
	return sig, nil
}

func startFakeRemoteSigner(t *testing.T, f *fakeRemoteSigner) string {
	t.Helper()
	srv := rpc.NewServer()
	if err := srv.RegisterName("eth", f); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		srv.Stop()
	})
	return hs.URL
}

// TestRPCSignerChecksWhatItGetsBack: a transaction signed with another nonce or another key,
// and an authorization signed with another key, are refused; the typed-data method falls back
// to Web3Signer's name and keeps using it; a signer that does not hold the hot wallet is refused
// at start, and no error shows the signer's URL.
func TestRPCSignerChecksWhatItGetsBack(t *testing.T) {
	ctx := t.Context()
	f := &fakeRemoteSigner{hot: chaintest.Key(t), other: chaintest.Key(t)}
	url := startFakeRemoteSigner(t, f)
	chain := NewChain(big.NewInt(137), common.HexToAddress("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"), "USD Coin")
	hot := addrOf(f.hot)

	if _, err := NewRPCSigner(ctx, url, addrOf(f.other)); err == nil || !strings.Contains(err.Error(), "does not hold the hot wallet") {
		t.Fatalf("a signer without the hot wallet: %v", err)
	}
	secretURL := strings.Replace(url, "http://", "http://tollgate:s3cret@", 1)
	s, err := NewRPCSigner(ctx, secretURL, hot)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if strings.Contains(s.String()+s.GoString()+s.LogValue().String(), "s3cret") {
		t.Error("the signer shows its URL")
	}

	to := common.HexToAddress("0x000000000000000000000000000000000000a11c")
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(137), Nonce: 7, GasTipCap: big.NewInt(25e9), GasFeeCap: big.NewInt(60e9),
		Gas: 90_000, To: &to, Value: big.NewInt(0), Data: []byte{0xe3, 0xee, 0x16, 0x0e}})
	signed, err := s.SignTx(ctx, tx, big.NewInt(137))
	if err != nil {
		t.Fatalf("an honest signature refused: %v", err)
	}
	if signed.Hash() == tx.Hash() || signed.Nonce() != 7 {
		t.Fatalf("signed %v", signed)
	}
	for lie, want := range map[string]string{"nonce": "another transaction than the one asked for: nonce 8", "key": "signed as " + addrOf(f.other).Hex()} {
		f.lie = lie
		if _, err := s.SignTx(ctx, tx, big.NewInt(137)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a transaction signed with another %s: %v, want %q", lie, err, want)
		}
	}

	a := Authorization{From: hot, To: to, Value: big.NewInt(5_000_000), ValidAfter: 1, ValidBefore: 2_000_000_000, Nonce: NonceFor("payout-1")}
	f.digest = chain.Digest(a)
	f.lie = ""
	sa, err := signAuthorization(ctx, s, chain, a)
	if err != nil {
		t.Fatalf("an honest authorization refused: %v", err)
	}
	if who, err := chain.Recover(sa); err != nil || who != hot {
		t.Fatalf("recovered %s, %v", who.Hex(), err)
	}
	if !s.legacyTyped.Load() {
		t.Errorf("still asking eth_signTypedData_v4 after the signer refused it")
	}
	f.lie = "key"
	if _, err := signAuthorization(ctx, s, chain, a); err == nil || !strings.Contains(err.Error(), "not the hot wallet") {
		t.Errorf("an authorization signed with another key: %v", err)
	}

	// Go masks a password in the URL it shows, but not a token in the path or query.
	for _, u := range []string{"http://tollgate:s3cret@127.0.0.1:1/", "http://127.0.0.1:1/s3cret?key=s3cret", "http://tollgate:s3cret@127.0.0.1:1/s3cret?key=s3cret"} {
		_, err = NewRPCSigner(ctx, u, hot)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("an unreachable signer: %v (must fail without showing the URL)", err)
		}
	}
}
