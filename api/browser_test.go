package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/settlement"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// simChain is a simulated chain (id 1337, finalized every 32 blocks) with the test USDC token,
// a treasury and a hot wallet with gas, for the settlement worker to relay top-ups on.
type simChain struct {
	t        *testing.T
	backend  *simulated.Backend
	send     chaintest.Sender
	chain    settlement.Chain
	owner    *ecdsa.PrivateKey
	hot      *ecdsa.PrivateKey
	treasury common.Address
}

func newSimChain(t *testing.T) *simChain {
	t.Helper()
	c := &simChain{t: t}
	var err error
	for _, k := range []**ecdsa.PrivateKey{&c.owner, &c.hot} {
		if *k, err = crypto.GenerateKey(); err != nil {
			t.Fatal(err)
		}
	}
	_, treasury := newWallet(t)
	c.treasury = common.HexToAddress(treasury)
	gas := new(big.Int).Lsh(big.NewInt(1), 100)
	c.backend = simulated.NewBackend(types.GenesisAlloc{
		crypto.PubkeyToAddress(c.owner.PublicKey): {Balance: gas},
		crypto.PubkeyToAddress(c.hot.PublicKey):   {Balance: gas},
	})
	t.Cleanup(func() { _ = c.backend.Close() })
	client := c.backend.Client()
	c.send = chaintest.Sender{Client: client, Mine: func() { c.backend.Commit() }, TipFloor: big.NewInt(3_000_000_000)}
	token, err := c.send.DeployToken(t.Context(), c.owner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	id, err := client.ChainID(t.Context())
	if err != nil || id.Uint64() != testChainID {
		t.Fatalf("simulated chain id %v %v, want %d", id, err, testChainID)
	}
	c.chain = settlement.NewChain(id, token, "USD Coin")
	c.chain.TipFloor = big.NewInt(2_000_000_000) // the node suggests less than it accepts
	return c
}

func (c *simChain) mint(to common.Address, micro int64) {
	c.t.Helper()
	if err := c.send.Mint(c.t.Context(), c.owner, c.chain.Token, to, micro); err != nil {
		c.t.Fatal(err)
	}
}

func (c *simChain) tokenBalance(a common.Address) int64 {
	c.t.Helper()
	b, err := c.send.BalanceOf(c.t.Context(), c.chain.Token, a)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// worker is the real settlement worker for the chain, on the env's database and ledger.
func (c *simChain) worker(e *env) *settlement.Worker {
	c.t.Helper()
	w, err := settlement.NewWorker(settlement.WorkerConfig{
		Chain: c.chain, Client: c.backend.Client(), Signer: settlement.NewLocalSignerFromKey(c.hot), Pool: e.db.Pool,
		Ledger: e.ledger, Wallets: settlement.PaywallWallets{Pool: e.db.Pool}, Treasury: c.treasury,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := w.Check(c.t.Context()); err != nil {
		c.t.Fatal(err)
	}
	return w
}

// run ticks the worker and mines a block every 100 ms until ctx ends. One goroutine does
// both, so the simulated backend never mines while the worker sends.
func (c *simChain) run(ctx context.Context, w *settlement.Worker) {
	for ctx.Err() == nil {
		if err := w.Tick(ctx); err != nil && ctx.Err() == nil {
			c.t.Logf("settlement tick: %v", err)
		}
		c.backend.Commit()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fakeWallet is the browser wallet's key side, at the process boundary: the page's injected
// EIP-1193 provider forwards every request here. It signs with a key the test made.
type fakeWallet struct {
	t       *testing.T
	key     *ecdsa.PrivateKey
	address string // lower case, as wallets report accounts

	mu      sync.Mutex
	chainID uint64
	calls   []string
}

type walletRPC struct {
	Method string            `json:"method"`
	Params []json.RawMessage `json:"params"`
}

type walletError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (w *fakeWallet) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var req walletRPC
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	w.calls = append(w.calls, req.Method)
	w.mu.Unlock()
	result, werr := w.handle(req)
	rw.Header().Set("Content-Type", "application/json")
	if werr != nil {
		_ = json.NewEncoder(rw).Encode(map[string]any{"error": werr})
		return
	}
	_ = json.NewEncoder(rw).Encode(map[string]any{"result": result})
}

func (w *fakeWallet) handle(req walletRPC) (any, *walletError) {
	str := func(i int) string {
		var s string
		if i < len(req.Params) {
			_ = json.Unmarshal(req.Params[i], &s)
		}
		return s
	}
	switch req.Method {
	case "eth_requestAccounts", "eth_accounts":
		return []string{w.address}, nil
	case "eth_chainId":
		w.mu.Lock()
		defer w.mu.Unlock()
		return hexutil.EncodeUint64(w.chainID), nil
	case "wallet_switchEthereumChain":
		var p []struct {
			ChainID string `json:"chainId"`
		}
		raw, _ := json.Marshal(req.Params)
		_ = json.Unmarshal(raw, &p)
		if len(p) != 1 {
			return nil, &walletError{-32602, "bad params"}
		}
		id, err := hexutil.DecodeUint64(p[0].ChainID)
		if err != nil {
			return nil, &walletError{-32602, err.Error()}
		}
		w.mu.Lock()
		w.chainID = id
		w.mu.Unlock()
		return nil, nil
	case "personal_sign":
		msg, err := hexutil.Decode(str(0))
		if err != nil || !strings.EqualFold(str(1), w.address) {
			return nil, &walletError{-32602, "personal_sign wants [0x-hex message, own address]"}
		}
		sig, err := crypto.Sign(accounts.TextHash(msg), w.key)
		if err != nil {
			return nil, &walletError{-32603, err.Error()}
		}
		sig[64] += 27
		return hexutil.Encode(sig), nil
	case "eth_signTypedData_v4":
		if !strings.EqualFold(str(0), w.address) {
			return nil, &walletError{-32602, "eth_signTypedData_v4 wants [own address, typed data JSON]"}
		}
		return signTypedData(w.t, w.key, json.RawMessage(str(1))), nil
	}
	return nil, &walletError{4200, "unsupported method " + req.Method}
}

// browserPrereqs finds Chromium, node and playwright-core, or fails saying what to install.
func browserPrereqs(t *testing.T) (chromium, node, playwright string) {
	t.Helper()
	chromium = os.Getenv("TOLLGATE_TEST_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("Chromium is needed at %s (apt-get install -y chromium, or set TOLLGATE_TEST_CHROMIUM): %v", chromium, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed to drive the browser (apt-get install -y nodejs): %v", err)
	}
	playwright = os.Getenv("TOLLGATE_TEST_PLAYWRIGHT")
	if playwright == "" {
		abs, err := filepath.Abs("../tools/node/node_modules/playwright-core")
		if err != nil {
			t.Fatal(err)
		}
		playwright = abs
	}
	if _, err := os.Stat(filepath.Join(playwright, "package.json")); err != nil {
		t.Fatalf("playwright-core is needed at %s (run `make tools`, or set TOLLGATE_TEST_PLAYWRIGHT): %v", playwright, err)
	}
	return chromium, node, playwright
}

// TestBrowserConnectAndTopUp opens the connect and top-up pages in headless Chromium with an
// injected EIP-1193 wallet backed by a test key: the page signs in with Ethereum, the wallet is
// authorized; the page has an EIP-712 top-up signed and shows it pending, then credited once the
// real settlement worker relayed it on a simulated chain and it became final; the wallet page
// shows the balance and history and disconnects. Screenshots are kept
// in api/testdata/screenshots (git-ignored).
func TestBrowserConnectAndTopUp(t *testing.T) {
	chromium, node, playwright := browserPrereqs(t)
	ch := newSimChain(t)
	e := newEnv(t, func(d *Deps, _ *Options) {
		topUps, err := settlement.NewTopUps(d.Pool, []settlement.Chain{ch.chain}, ch.treasury.Hex(), settlement.TopUpOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.TopUps = topUps
	})
	pw, _ := e.newPaywall("Browser Demo")
	key, address := newWallet(t)
	ch.mint(common.HexToAddress(address), 20_000_000)
	worker := ch.worker(e)
	// The wallet starts on mainnet, so the pages must ask it to switch.
	wallet := &fakeWallet{t: t, key: key, address: address, chainID: 1}
	// An earlier top-up, a request, and a charge the app refunded, for the wallet page's
	// balance and history.
	e.deposit(address, 2_500_000)
	e.pastSpending(pw.ID, "browser-user", address)
	signer := httptest.NewServer(wallet)
	t.Cleanup(signer.Close)

	shots, err := filepath.Abs(filepath.Join("testdata", "screenshots", t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s", shots)

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "browser.cjs"))
	cmd.Env = append(os.Environ(),
		"TG_CHROMIUM="+chromium,
		"TG_PLAYWRIGHT="+playwright,
		"TG_SIGNER="+signer.URL,
		"TG_SHOTS="+shots,
		"TG_CONNECT_URL="+e.links.URL(pw.ID, "browser-user", paywall.PurposeAuthorize),
		"TG_TOPUP_URL="+e.links.URL(pw.ID, "browser-user", paywall.PurposeTopUp),
		"TG_WALLET_URL="+e.links.URL(pw.ID, "browser-user", paywall.PurposeWallet),
		"TG_AMOUNT=5",
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// The settlement worker runs beside the browser: it relays the signed top-up, the chain
	// mines, and the deposit is credited at finality, which the page then shows.
	chainDone := make(chan struct{})
	go func() {
		defer close(chainDone)
		ch.run(ctx, worker)
	}()
	out, err := cmd.Output()
	cancel()
	<-chainDone
	steps := map[string]map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var line map[string]string
		if json.Unmarshal(sc.Bytes(), &line) == nil {
			t.Logf("browser: %s", sc.Text())
			steps[line["step"]] = line
		}
	}
	if err != nil {
		t.Fatalf("browser script: %v\n%s", err, stderr.String())
	}

	if !strings.Contains(steps["connect"]["status"], "Connected: "+address) {
		t.Errorf("connect page says %q", steps["connect"]["status"])
	}
	var authorized string
	err = e.db.Pool.QueryRow(t.Context(), `SELECT wallet FROM paywall_authorizations WHERE paywall_id = $1 AND user_id = $2`,
		pw.ID, "browser-user").Scan(&authorized)
	if err != nil || authorized != address {
		t.Errorf("the browser's sign-in authorized %q (%v), want %s", authorized, err, address)
	}

	if s := steps["topup"]["status"]; !strings.Contains(s, "5.00 USDC") || !strings.Contains(s, "Pending") {
		t.Errorf("top-up page says %q", s)
	}
	if s := steps["credited"]["status"]; !strings.Contains(s, "Credited") {
		t.Errorf("top-up page later says %q", s)
	}
	var status, from string
	var amount int64
	err = e.db.Pool.QueryRow(t.Context(), `SELECT status, wallet, amount_micro FROM settlement_topups WHERE paywall_id = $1 AND user_id = $2`,
		pw.ID, "browser-user").Scan(&status, &from, &amount)
	if err != nil || status != "credited" || from != address || amount != 5_000_000 {
		t.Errorf("top-up in the database: %s %s %d %v", status, from, amount, err)
	}
	if b, err := e.ledger.Balance(t.Context(), address); err != nil || b.AvailableMicro != 7_490_000 {
		t.Errorf("ledger balance %+v %v, want 7.49 USDC (2.50 before, a request of 0.01, 5.00 topped up)", b, err)
	}
	if got := ch.tokenBalance(ch.treasury); got != 5_000_000 {
		t.Errorf("treasury holds %d micro-USDC on chain, want 5000000", got)
	}

	w := steps["wallet"]
	if !strings.Contains(w["status"], "7.49") {
		t.Errorf("wallet page shows %q", w["status"])
	}
	for _, row := range []string{"Top-up+5.00", "Top-up+2.50", "Request to fake/model-0.01", "An extra feature-1.00", "Refund: charged twice+1.00"} {
		if !strings.Contains(w["history"], row) {
			t.Errorf("wallet page's history %q has no row %q", w["history"], row)
		}
	}
	if !strings.Contains(steps["disconnect"]["status"], "Disconnected") {
		t.Errorf("wallet page after disconnect says %q", steps["disconnect"]["status"])
	}
	if _, err := e.store.Authorization(t.Context(), pw.ID, "browser-user"); err == nil {
		t.Error("still authorized after the wallet page's disconnect")
	}

	wallet.mu.Lock()
	calls := fmt.Sprint(wallet.calls)
	wallet.mu.Unlock()
	for _, m := range []string{"personal_sign", "wallet_switchEthereumChain", "eth_signTypedData_v4"} {
		if !strings.Contains(calls, m) {
			t.Errorf("the pages never called %s: %s", m, calls)
		}
	}
	for _, f := range []string{"1-connect.png", "2-connected.png", "3-topup.png", "4-topup-pending.png", "5-topup-credited.png", "6-wallet.png", "7-disconnected.png"} {
		if st, err := os.Stat(filepath.Join(shots, f)); err != nil || st.Size() == 0 {
			t.Errorf("screenshot %s: %v", f, err)
		}
	}
}

// pastSpending gives the wallet a history as the request path and the app's API write it: a
// request (a captured hold, with its model) and a charge the app refunded, each with the
// paywall and user in its metadata as the history's filter expects.
func (e *env) pastSpending(paywallID, user, wallet string) {
	e.t.Helper()
	ctx, l := e.t.Context(), e.ledger
	meta := func(kv ...string) map[string]string {
		m := map[string]string{"paywall": paywallID, "user": user}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	h, err := l.Hold(ctx, ledger.HoldRequest{Key: "past:hold", Wallet: wallet, Paywall: paywallID, AmountMicro: 50_000, TTL: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := l.Capture(ctx, ledger.CaptureRequest{Key: "past:capture", HoldID: h.ID,
		Split: ledger.Split{FeeMicro: 500, DeveloperMicro: 9_500}, Metadata: meta("model", "fake/model")}); err != nil {
		e.t.Fatal(err)
	}
	c, err := l.Charge(ctx, ledger.ChargeRequest{Key: "past:charge", Wallet: wallet, Paywall: paywallID,
		Split: ledger.Split{FeeMicro: 50_000, DeveloperMicro: 950_000}, Metadata: meta("description", "An extra feature")})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := l.Reverse(ctx, ledger.ReverseRequest{Key: "past:refund", TransferID: c.ID, Reason: "charged twice", Metadata: meta()}); err != nil {
		e.t.Fatal(err)
	}
}
