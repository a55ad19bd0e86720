package mainlib

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/settlement"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

func TestSettleCommandRefusesBadSetups(t *testing.T) {
	dir := t.TempDir()
	noChains := filepath.Join(dir, "none.yaml")
	writeFile(t, noChains, "settle: {}\n")
	oneChain := filepath.Join(dir, "one.yaml")
	writeFile(t, oneChain, `settle:
  treasury: "0x1111111111111111111111111111111111111111"
  chains:
    - {id: "31337", rpc_url: "http://127.0.0.1:1", usdc: "0x5FbDB2315678afecb367f032d93F642f64180aa3"}
`)
	for _, tt := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"no chains", []string{"settle", "-config", noChains}, "no chains configured", 1},
		{"no hot wallet key", []string{"settle", "-config", oneChain}, "settle.hot_wallet.private_key or private_key_file is required", 1},
		{"unknown chain flag", []string{"settle", "-config", oneChain, "-chain", "137"}, "-chain 137 is not configured", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Main(t.Context(), tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) || ExitCode(err) != tt.code {
				t.Fatalf("err = %v (exit %d), want %q (exit %d)", err, ExitCode(err), tt.want, tt.code)
			}
		})
	}
}

// TestAnvilSettleCommand runs `tollgate settle` against anvil with a configuration file and the
// hot wallet key in the environment, relays a top-up through it, and stops it cleanly.
func TestAnvilSettleCommand(t *testing.T) {
	ctx := t.Context()
	node := chaintest.StartAnvil(t, chaintest.AnvilOptions{})
	owner, hot, user := newKey(t), newKey(t), newKey(t)
	for _, k := range []*ecdsaKey{owner, hot} {
		if err := node.SetBalance(ctx, crypto.PubkeyToAddress(k.PublicKey), new(big.Int).Mul(big.NewInt(10), big.NewInt(1e18))); err != nil {
			t.Fatal(err)
		}
	}
	send := chaintest.Sender{Client: node.Client, TipFloor: big.NewInt(25_000_000_000)}
	token, err := send.DeployToken(ctx, owner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	userAddr := crypto.PubkeyToAddress(user.PublicKey)
	if err := send.Mint(ctx, owner, token, userAddr, 5_000_000); err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t, schema.All()...)
	treasury := crypto.PubkeyToAddress(hot.PublicKey).Hex()
	cfgPath := filepath.Join(t.TempDir(), "tollgate.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`database:
  url: %q
log:
  level: debug
settle:
  treasury: %q
  poll_interval: 300ms
  lease_ttl: 10s
  chains:
    - id: %q
      name: anvil
      rpc_url: %q
      usdc: %q
      tip_floor_gwei: "25"
`, db.URL, treasury, node.ChainID.String(), node.URL, token.Hex()))
	keyHex := hex.EncodeToString(crypto.FromECDSA(hot))
	t.Setenv("TOLLGATE_SETTLE_HOT_WALLET_PRIVATE_KEY", "0x"+keyHex)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var stdout, stderr lockedBuffer
	done := make(chan error, 1)
	go func() { done <- Main(runCtx, []string{"settle", "-config", cfgPath}, &stdout, &stderr) }()
	waitFor(t, "readiness line", func() bool { return strings.Contains(stderr.String(), settleReady) }, done, &stderr)

	// The API side: a top-up intent from the same configuration, signed by the user's wallet.
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := settlement.ChainsFromConfig(cfg.Settle.Chains)
	if err != nil {
		t.Fatal(err)
	}
	topups, err := settlement.NewTopUps(db.Pool, chains, treasury, settlement.TopUpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := topups.Create(ctx, settlement.TopUpRequest{Wallet: userAddr.Hex(), AmountMicro: 2_500_000})
	if err != nil {
		t.Fatal(err)
	}
	sig := signIntent(t, chains[0], user, in.TypedData)
	if _, err := topups.Submit(ctx, in.ID, sig); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "top-up credited", func() bool {
		tu, err := topups.Get(ctx, in.ID)
		return err == nil && tu.Status == settlement.TopUpCredited
	}, done, &stderr)
	b, err := ledger.New(db.Pool, ledger.Options{}).Balance(ctx, userAddr.Hex())
	if err != nil || b.PostedMicro != 2_500_000 {
		t.Fatalf("wallet %+v, %v", b, err)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("settle returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("settle did not stop within 15s of cancellation")
	}
	logs := stderr.String()
	if strings.Contains(strings.ToLower(logs), keyHex) || strings.Contains(logs, node.URL) {
		t.Fatal("the logs contain the hot wallet key or the RPC URL")
	}
	if !strings.Contains(logs, "deposit credited") {
		t.Fatalf("no credit in the logs:\n%s", logs)
	}
}

type ecdsaKey = ecdsa.PrivateKey

func newKey(t *testing.T) *ecdsaKey {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 90 s, failing early if the program exits.
func waitFor(t *testing.T, what string, cond func() bool, done <-chan error, stderr *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("settle exited (%v) before %s:\n%s", err, what, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("never reached: %s\n%s", what, stderr.String())
		}
	}
}

// signIntent signs a top-up's typed data as the user's wallet would (eth_signTypedData_v4).
func signIntent(t *testing.T, c settlement.Chain, key *ecdsaKey, typedData json.RawMessage) string {
	t.Helper()
	var td struct {
		Message json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(typedData, &td); err != nil {
		t.Fatal(err)
	}
	// Decode the message with a placeholder signature, then sign its digest.
	payload := fmt.Sprintf(`{"authorization":%s,"signature":"0x%s1b"}`, td.Message, strings.Repeat("11", 64))
	sa, err := settlement.DecodeAuthorizationPayload([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := settlement.NewLocalSignerFromKey(key).SignDigest(t.Context(), c.Digest(sa.Authorization))
	if err != nil {
		t.Fatal(err)
	}
	return "0x" + hex.EncodeToString(sig)
}
