package devchain

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

func TestWellKnownAccounts(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{AnvilKey0, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"},
		{AnvilKey1, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"},
		{AnvilKey2, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"},
	} {
		if got, err := Address(tc.key); err != nil || got.Hex() != tc.want {
			t.Errorf("Address(%s…) = %s, %v; want %s", tc.key[:6], got.Hex(), err, tc.want)
		}
	}
	if got := TokenAddress().Hex(); got != "0x5FbDB2315678afecb367f032d93F642f64180aa3" {
		t.Errorf("TokenAddress() = %s", got)
	}
}

// TestDeployOnceAndMint runs devchain against anvil: the first run deploys the token at
// TokenAddress and mints; a second run finds it and deploys nothing; a chain where account #0
// already sent a transaction without deploying is refused.
func TestDeployOnceAndMint(t *testing.T) {
	ctx := t.Context()
	node := chaintest.StartAnvil(t, chaintest.AnvilOptions{})
	deployer, _ := Address(AnvilKey0)
	if err := node.SetBalance(ctx, deployer, new(big.Int).Mul(big.NewInt(10), big.NewInt(1e18))); err != nil {
		t.Fatal(err)
	}
	user, _ := Address(AnvilKey2)
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := Run(ctx, append([]string{"-rpc", node.URL}, args...), nil, &out, &errOut)
		return strings.TrimSpace(out.String()), err
	}
	balance := func() int64 {
		b, err := chaintest.Sender{Client: node.Client}.BalanceOf(ctx, TokenAddress(), user)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i := range 2 {
		out, err := run("-mint", user.Hex()+"=1.5")
		if err != nil || out != TokenAddress().Hex() {
			t.Fatalf("run %d: printed %q, %v; want %s", i+1, out, err, TokenAddress().Hex())
		}
		if got := balance(); got != int64(i+1)*1_500_000 {
			t.Fatalf("run %d: the user holds %d µUSDC", i+1, got)
		}
	}
	var out bytes.Buffer
	if err := Run(ctx, []string{"balance", "-rpc", node.URL, user.Hex(), deployer.Hex()}, nil, &out, &out); err != nil ||
		out.String() != user.Hex()+" 3.000000 USDC\n"+deployer.Hex()+" 0.000000 USDC\n" {
		t.Fatalf("balance printed %q, %v", out.String(), err)
	}
	for _, bad := range [][]string{{"balance", "-rpc", node.URL}, {"balance", "-rpc", node.URL, "0x12"}} {
		if err := Run(ctx, bad, nil, &out, &out); err == nil {
			t.Errorf("devchain %v succeeded", bad)
		}
	}
	nonce, err := node.Client.NonceAt(ctx, deployer, nil)
	if err != nil || nonce != 3 { // one deployment, two mints
		t.Fatalf("account #0 sent %d transactions (%v); want 3: the second run must not deploy again", nonce, err)
	}
	if _, err := run("-name", "Other Coin"); err == nil || !strings.Contains(err.Error(), "not the test USDC") {
		t.Fatalf("a token of another name at the address: %v", err)
	}
	for _, bad := range []string{"0x12=1", user.Hex() + "=0", user.Hex() + "=1.0000001", user.Hex() + "=-1", user.Hex()} {
		if _, err := run("-mint", bad); err == nil {
			t.Errorf("-mint %s was accepted", bad)
		}
	}

	// A fresh chain where account #0 spent its nonce 0 on something else.
	used := chaintest.StartAnvil(t, chaintest.AnvilOptions{})
	if err := used.SetBalance(ctx, deployer, new(big.Int).Mul(big.NewInt(10), big.NewInt(1e18))); err != nil {
		t.Fatal(err)
	}
	key, _ := crypto.HexToECDSA(AnvilKey0)
	if _, err := (chaintest.Sender{Client: used.Client}).Send(ctx, key, &user, nil); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Run(ctx, []string{"-rpc", used.URL}, nil, &out, &out); !errors.Is(err, ErrChainUsed) {
		t.Fatalf("deploying on a used chain: %v, want ErrChainUsed", err)
	}
}

// TestSign checks both signatures recover to the signing key's address, as a wallet's would.
func TestSign(t *testing.T) {
	user, _ := Address(AnvilKey2)
	recoverAddr := func(hash []byte, sigHex string) common.Address {
		t.Helper()
		sig, err := hexutil.Decode(sigHex)
		if err != nil || len(sig) != 65 || (sig[64] != 27 && sig[64] != 28) {
			t.Fatalf("signature %q (%v): want 65 bytes with v = 27 or 28", sigHex, err)
		}
		sig[64] -= 27
		pub, err := crypto.SigToPub(hash, sig)
		if err != nil {
			t.Fatal(err)
		}
		return crypto.PubkeyToAddress(*pub)
	}
	msg := "localhost wants you to sign in with your Ethereum account:\n" + user.Hex() + "\n\nHi.\n"
	var out bytes.Buffer
	if err := Run(t.Context(), []string{"sign"}, strings.NewReader(msg), &out, &out); err != nil {
		t.Fatal(err)
	}
	if got := recoverAddr(accounts.TextHash([]byte(msg)), strings.TrimSpace(out.String())); got != user {
		t.Errorf("sign: recovered %s, want %s", got.Hex(), user.Hex())
	}

	typed := `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"}],
	  "Mail":[{"name":"to","type":"address"},{"name":"value","type":"uint256"}]},
	  "primaryType":"Mail","domain":{"name":"USD Coin","chainId":"31337"},
	  "message":{"to":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","value":"5000000"}}`
	var td apitypes.TypedData
	if err := json.Unmarshal([]byte(typed), &td); err != nil {
		t.Fatal(err)
	}
	hash, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Run(t.Context(), []string{"sign-typed"}, strings.NewReader(typed), &out, &out); err != nil {
		t.Fatal(err)
	}
	if got := recoverAddr(hash, strings.TrimSpace(out.String())); got != user {
		t.Errorf("sign-typed: recovered %s, want %s", got.Hex(), user.Hex())
	}
	if err := Run(t.Context(), []string{"sign-typed"}, strings.NewReader("{"), &out, &out); err == nil {
		t.Error("sign-typed accepted malformed JSON")
	}
}
