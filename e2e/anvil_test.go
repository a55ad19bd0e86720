package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/tollgate-dev/tollgate/cmd/tollgate/mainlib"
	"github.com/tollgate-dev/tollgate/e2e/envoyemu"
	"github.com/tollgate-dev/tollgate/e2e/fakeupstream"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/pricing"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// TestAnvilPaidChatAndPayout moves real money on a real EVM node through the real programs:
// anvil (1 s blocks, `finalized` about two blocks behind the head) with the test USDC,
// `tollgate migrate`, `tollgate paywall create|set-price`, `tollgate serve` and `tollgate
// settle` run in-process by mainlib.Main from one configuration file, the Envoy emulator
// reading envoy/envoy.yaml in front, the official openai-go SDK as the app. The user only ever
// signs (EIP-191 for Sign-In with Ethereum, EIP-712 for the top-up) with a key the test holds,
// as a browser wallet would; the user holds no native currency.
//
// unknown user → authorize message → sign-in through the connect page's calls → top-up message
// → top-up through the top-up page's calls → relayed and credited at finality by the worker →
// a chat completion charged exactly → the capture in the app's history → the developer
// withdraws through the API (Idempotency-Key) → paid on anvil and settled at finality → the
// USDC balances on chain of treasury, hot wallet, user and developer match the ledger.
func TestAnvilPaidChatAndPayout(t *testing.T) {
	ctx := t.Context()
	const (
		mintedMicro = 25_000_000 // the user's test USDC on chain
		topUpMicro  = 10_000_000 // what the user tops up
		floatMicro  = 3_000_000  // the hot wallet's USDC float, which pays payouts
		payoutMicro = 1_500_000  // what the developer withdraws
		user        = "erin"
	)

	// --- the chain: anvil, the test USDC, the operator's and the people's keys -----------------
	node := chaintest.StartAnvil(t, chaintest.AnvilOptions{})
	owner, hot, treasury, userKey, developer := chaintest.Key(t), chaintest.Key(t), chaintest.Key(t), chaintest.Key(t), chaintest.Key(t)
	node.Fund(t, address(owner), address(hot))
	tipFloor := big.NewInt(25_000_000_000) // Polygon PoS's floor, as in production
	send := chaintest.Sender{Client: node.Client, TipFloor: tipFloor}
	token, err := send.DeployToken(ctx, owner, "USD Coin")
	if err != nil {
		t.Fatal(err)
	}
	for to, micro := range map[common.Address]int64{address(userKey): mintedMicro, address(hot): floatMicro} {
		if err := send.Mint(ctx, owner, token, to, micro); err != nil {
			t.Fatal(err)
		}
	}
	usdc := func(a common.Address) int64 {
		t.Helper()
		b, err := send.BalanceOf(ctx, token, a)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// --- tollgate: one configuration, migrate, the admin CLI, settle, serve, Envoy ------------
	db := testdb.NewWithPool(t, 4) // empty: `tollgate migrate` makes the schema
	checkLedgerAtEnd(t, db)
	rdb, prefix := testredis.New(t)
	front, err := net.Listen("tcp", "127.0.0.1:0") // the public URL must be known before serve starts
	if err != nil {
		t.Fatal(err)
	}
	publicURL := "http://" + front.Addr().String()
	cfgPath := filepath.Join(t.TempDir(), "tollgate.yaml")
	cfg := fmt.Sprintf(`database:
  url: %q
  max_conns: 8
redis:
  addr: %q
  prefix: %q
log:
  level: debug
serve:
  grpc_addr: 127.0.0.1:0
  http_addr: 127.0.0.1:0
  admin_addr: 127.0.0.1:0
  public_url: %q
  link_secret: %q
  shutdown_grace: 1s
paywall:
  secrets_key: %q
settle:
  treasury: %q
  hot_wallet:
    private_key: %q
  poll_interval: 300ms
  lease_ttl: 10s
  chains:
    - id: %q
      name: anvil
      rpc_url: %q
      usdc: %q
      tip_floor_gwei: "25"
`, db.URL, testredis.Addr(), prefix, publicURL, strings.Repeat("s", 32), secretsKey, address(treasury).Hex(),
		hexutil.Encode(crypto.FromECDSA(hot)), node.ChainID.String(), node.URL, token.Hex())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	tollgate := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := mainlib.Main(ctx, append(append([]string{}, args...), "-config", cfgPath), &out, &errOut); err != nil {
			t.Fatalf("tollgate %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String()
	}
	tollgate("migrate")

	upstream := fakeupstream.New(fakeupstream.Options{Name: "demo", RequireKey: byokKey})
	demo := httptest.NewServer(upstream)
	t.Cleanup(demo.Close)
	var created struct {
		ID     string `json:"id"`
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(tollgate("paywall", "create", "-name", "Anvil app", "-owner", "dev@example.com", "-mode", "byok",
		"-upstream", "demo", "-upstream-key", byokKey, "-markup-bps", "1000", "-payout-address", address(developer).Hex(), "-json")), &created); err != nil {
		t.Fatal(err)
	}
	// A price that makes one completion earn the developer more than the smallest withdrawal.
	tollgate("paywall", "set-price", created.ID, model, "-input", "20000", "-output", "100000")
	key := created.APIKey

	settleOut := runInBackground(t, "settle", cfgPath)
	settleOut.waitFor(t, "tollgate settle is running")
	serveOut := runInBackground(t, "serve", cfgPath)
	addrs := readyAddrs(serveOut.waitFor(t, "tollgate serve: ready"))
	proxy, err := envoyemu.New(envoyemu.Options{
		Config: "../envoy/envoy.yaml",
		Endpoints: map[string][]string{
			"tollgate_extproc": {addrs["grpc"]},
			"tollgate_http":    {addrs["http"]},
			"demo":             {strings.TrimPrefix(demo.URL, "http://")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	frontSrv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = frontSrv.Serve(front) }()
	t.Cleanup(func() { _ = frontSrv.Close() })
	s := &stack{url: publicURL}
	c := s.client(key, user)
	chat := func(t *testing.T) (string, string) {
		t.Helper()
		res, hdr := ask(t, c)
		return hdr.Get("x-tollgate-action"), res.Choices[0].Message.Content
	}

	// --- the user connects a wallet (Sign-In with Ethereum) --------------------------------
	action, text := chat(t)
	if action != "authorize" {
		t.Fatalf("an unknown user got %q (action %q), want the authorize message", text, action)
	}
	connect := linkToken(t, text, publicURL+"/connect")
	var challenge struct {
		Message string `json:"message"`
	}
	apiCall(t, "POST", publicURL+"/pages/v1/connect/challenge", "", "",
		fmt.Sprintf(`{"address":%q,"chain_id":%q}`, address(userKey).Hex(), node.ChainID.String()),
		map[string]string{"X-Tollgate-Link": connect}).decode(t, http.StatusOK, &challenge)
	verify, _ := json.Marshal(map[string]string{"message": challenge.Message, "signature": personalSign(t, userKey, challenge.Message)})
	var connected struct {
		Authorized bool   `json:"authorized"`
		Wallet     string `json:"wallet"`
	}
	apiCall(t, "POST", publicURL+"/pages/v1/connect/verify", "", "", string(verify),
		map[string]string{"X-Tollgate-Link": connect}).decode(t, http.StatusOK, &connected)
	if !connected.Authorized || !strings.EqualFold(connected.Wallet, address(userKey).Hex()) {
		t.Fatalf("sign-in answered %+v", connected)
	}

	// --- the user tops up: the worker relays the signed authorization, credits at finality --
	eventually(t, "the top-up message", 5*time.Second, func() bool { action, text = chat(t); return action == "topup" })
	topUp := linkToken(t, text, publicURL+"/topup")
	var intent struct {
		ID        string          `json:"id"`
		TypedData json.RawMessage `json:"typed_data"`
	}
	apiCall(t, "POST", publicURL+"/pages/v1/topups", "", "", fmt.Sprintf(`{"amount":%q}`, pricing.FormatUSDC(topUpMicro)),
		map[string]string{"X-Tollgate-Link": topUp}).decode(t, http.StatusCreated, &intent)
	sigBody, _ := json.Marshal(map[string]string{"signature": signTypedData(t, userKey, intent.TypedData)})
	var tu struct {
		Status string `json:"status"`
		TxHash string `json:"tx_hash"`
	}
	apiCall(t, "POST", publicURL+"/pages/v1/topups/"+intent.ID+"/signature", "", "", string(sigBody),
		map[string]string{"X-Tollgate-Link": topUp}).decode(t, http.StatusOK, &tu)
	eventually(t, "the top-up credited", 90*time.Second, func() bool {
		apiCall(t, "GET", publicURL+"/pages/v1/topups/"+intent.ID, "", "", "", map[string]string{"X-Tollgate-Link": topUp}).decode(t, http.StatusOK, &tu)
		if tu.Status == "failed" {
			t.Fatalf("top-up failed: %+v", tu)
		}
		return tu.Status == "credited"
	})
	if tu.TxHash == "" {
		t.Fatalf("a credited top-up without its transaction: %+v", tu)
	}
	if b := balance(t, publicURL, key, user); b.AvailableMicro != topUpMicro || b.PendingMicro != 0 {
		t.Fatalf("after the top-up: %+v, want %d available", b, topUpMicro)
	}

	// --- a chat completion, charged exactly usage × price × markup --------------------------
	var charge int64
	eventually(t, "a served completion", 5*time.Second, func() bool { action, text = chat(t); return action == "" })
	if !strings.HasPrefix(text, "w1 ") {
		t.Fatalf("not served: %q", text)
	}
	reqs := upstream.Requests()
	if len(reqs) != 1 || reqs[0].Authorization != "Bearer "+byokKey {
		t.Fatalf("the upstream saw %d requests (want 1, with the paywall's key)", len(reqs))
	}
	catalog := pricing.NewCatalog(db.Pool, rdb, prefix)
	t.Cleanup(func() { _ = catalog.Close() })
	price, err := catalog.Lookup(ctx, created.ID, model)
	if err != nil {
		t.Fatal(err)
	}
	u := reqs[0].Usage
	if charge, err = price.CostMicro(pricing.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}, 1000); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the capture", 10*time.Second, func() bool { return balance(t, publicURL, key, user).HeldMicro == 0 })
	if b := balance(t, publicURL, key, user); b.PostedMicro != topUpMicro-charge {
		t.Fatalf("after one completion of %+v: posted %d, want %d - %d", u, b.PostedMicro, topUpMicro, charge)
	}
	h := s.history(t, key, user)
	if len(h.Items) != 2 || h.Items[0].Kind != "capture" || h.Items[0].AmountMicro != -charge || h.Items[0].Metadata["paywall"] != created.ID ||
		h.Items[1].Kind != "deposit" || h.Items[1].AmountMicro != topUpMicro {
		t.Fatalf("history %+v: want the capture of %d, then the deposit of %d", h.Items, charge, topUpMicro)
	}
	split, err := pricing.Split(charge, 0, 500, "") // serve.fee_bps defaults to 500
	if err != nil {
		t.Fatal(err)
	}
	earned := split.DeveloperMicro
	if earned < payoutMicro {
		t.Fatalf("the developer earned %d, less than the withdrawal of %d: raise the test's price", earned, payoutMicro)
	}
	var earnings struct {
		AvailableMicro int64 `json:"available_micro"`
		InFlightMicro  int64 `json:"in_flight_micro"`
		PaidOutMicro   int64 `json:"paid_out_micro"`
	}
	apiCall(t, "GET", publicURL+"/api/v1/earnings", key, "", "", nil).decode(t, http.StatusOK, &earnings)
	if earnings.AvailableMicro != earned {
		t.Fatalf("earnings %+v, want %d available", earnings, earned)
	}

	// --- the developer withdraws; the worker pays on anvil, settles at finality ------------
	withdraw := func() apiAnswer {
		return apiCall(t, "POST", publicURL+"/api/v1/payouts", key, "", fmt.Sprintf(`{"amount":%q}`, pricing.FormatUSDC(payoutMicro)),
			map[string]string{"Idempotency-Key": "withdraw-2026-11"})
	}
	first := withdraw()
	var payout struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		To     string `json:"to"`
		TxHash string `json:"tx_hash"`
	}
	first.decode(t, http.StatusCreated, &payout)
	if replay := withdraw(); replay.Status != first.Status || !bytes.Equal(replay.Body, first.Body) || replay.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the replayed withdrawal answered %d %s, want the first answer again", replay.Status, replay.Body)
	}
	if !strings.EqualFold(payout.To, address(developer).Hex()) {
		t.Fatalf("payout %+v goes elsewhere than the payout address %s", payout, address(developer).Hex())
	}
	eventually(t, "the payout settled", 90*time.Second, func() bool {
		apiCall(t, "GET", publicURL+"/api/v1/payouts/"+payout.ID, key, "", "", nil).decode(t, http.StatusOK, &payout)
		if payout.Status == "failed" {
			t.Fatalf("payout failed: %+v", payout)
		}
		return payout.Status == "settled"
	})
	rcpt, err := node.Client.TransactionReceipt(ctx, common.HexToHash(payout.TxHash))
	if err != nil || rcpt.Status != 1 {
		t.Fatalf("the payout's transaction %s: %+v, %v", payout.TxHash, rcpt, err)
	}
	apiCall(t, "GET", publicURL+"/api/v1/earnings", key, "", "", nil).decode(t, http.StatusOK, &earnings)
	if earnings.AvailableMicro != earned-payoutMicro || earnings.InFlightMicro != 0 || earnings.PaidOutMicro != payoutMicro {
		t.Fatalf("earnings after the payout %+v, want %d available, %d paid out", earnings, earned-payoutMicro, payoutMicro)
	}

	// --- the chain agrees with the ledger -------------------------------------------------
	book := ledger.New(db.Pool, ledger.Options{})
	userBook, err := book.Balance(ctx, address(userKey).Hex())
	if err != nil {
		t.Fatal(err)
	}
	treasuryBook := accountTotal(t, book, ledger.Treasury(node.ChainID.String())) // payouts settled − deposits credited
	for _, check := range []struct {
		who         string
		chain, want int64
	}{
		{"treasury (every top-up)", usdc(address(treasury)), topUpMicro},
		{"user (minted − what the ledger credited)", usdc(address(userKey)), mintedMicro - (userBook.PostedMicro + charge)},
		{"developer (the ledger's paid out)", usdc(address(developer)), earnings.PaidOutMicro},
		{"hot wallet (float − payouts)", usdc(address(hot)), floatMicro - payoutMicro},
		{"operator's USDC moved (treasury + hot − float) = −ledger treasury", usdc(address(treasury)) + usdc(address(hot)) - floatMicro, -treasuryBook},
	} {
		if check.chain != check.want {
			t.Errorf("%s: %d µUSDC on chain, ledger says %d", check.who, check.chain, check.want)
		}
	}
	t.Logf("top-up %d µUSDC (tx %s); completion %+v charged %d µUSDC, developer earned %d; payout %d µUSDC (tx %s); on chain: treasury %d, user %d, developer %d, hot wallet %d",
		topUpMicro, tu.TxHash, u, charge, earned, payoutMicro, payout.TxHash,
		usdc(address(treasury)), usdc(address(userKey)), usdc(address(developer)), usdc(address(hot)))
	if gas, err := node.Client.BalanceAt(ctx, address(userKey), nil); err != nil || gas.Sign() != 0 {
		t.Errorf("the user holds native currency %v (%v); top-ups must be gasless", gas, err)
	}
}

func address(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

// personalSign is what a browser wallet's personal_sign returns (EIP-191, v = 27/28).
func personalSign(t *testing.T, k *ecdsa.PrivateKey, message string) string {
	t.Helper()
	sig, err := crypto.Sign(accounts.TextHash([]byte(message)), k)
	if err != nil {
		t.Fatal(err)
	}
	sig[64] += 27
	return hexutil.Encode(sig)
}

// signTypedData is what a browser wallet's eth_signTypedData_v4 returns for the typed data
// the top-up page hands it: the EIP-712 hash computed from the JSON alone, not by Tollgate.
func signTypedData(t *testing.T, k *ecdsa.PrivateKey, typedData json.RawMessage) string {
	t.Helper()
	var td apitypes.TypedData
	if err := json.Unmarshal(typedData, &td); err != nil {
		t.Fatalf("typed data: %v in %s", err, typedData)
	}
	hash, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := crypto.Sign(hash, k)
	if err != nil {
		t.Fatal(err)
	}
	sig[64] += 27
	return hexutil.Encode(sig)
}

var linkRE = regexp.MustCompile(`https?://[^\s"]+`)

// linkToken finds the link to page (public URL + path) in a chat message and returns its token.
func linkToken(t *testing.T, message, page string) string {
	t.Helper()
	for _, m := range linkRE.FindAllString(message, -1) {
		u, err := url.Parse(m)
		if err == nil && strings.HasPrefix(m, page+"?") && u.Query().Get("t") != "" {
			return u.Query().Get("t")
		}
	}
	t.Fatalf("no link to %s in %q", page, message)
	return ""
}

// balanceJSON is the answer of GET /api/v1/user/balance.
type balanceJSON struct {
	AvailableMicro int64 `json:"available_micro"`
	HeldMicro      int64 `json:"held_micro"`
	PostedMicro    int64 `json:"posted_micro"`
	PendingMicro   int64 `json:"pending_micro"`
}

func balance(t *testing.T, base, key, user string) balanceJSON {
	t.Helper()
	var b balanceJSON
	apiCall(t, "GET", base+"/api/v1/user/balance", key, user, "", nil).decode(t, http.StatusOK, &b)
	return b
}

// accountTotal sums an account's whole history: its posted balance.
func accountTotal(t *testing.T, book *ledger.Ledger, a ledger.Account) int64 {
	t.Helper()
	var total int64
	cursor := ""
	for {
		page, err := book.History(t.Context(), a, cursor, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			total += it.AmountMicro
		}
		if page.Next == "" {
			return total
		}
		cursor = page.Next
	}
}

// eventually polls cond every 200 ms until it holds, failing the test after timeout.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened within %s: %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// background is a long-running tollgate command, in-process (runInBackground) or in a child
// process (runInChild), stopped when
// the test ends; its output is kept and shown if the test fails.
type background struct {
	name string
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (b *background) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.Write(p)
}

func (b *background) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// runInBackground starts `tollgate CMD -config cfgPath`.
func runInBackground(t *testing.T, cmd, cfgPath string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	b := &background{name: cmd, done: make(chan error, 1)}
	go func() { b.done <- mainlib.Main(ctx, []string{cmd, "-config", cfgPath}, b, b) }()
	b.stopAtEnd(t, "its context ending", cancel, func() {})
	return b
}

// stopAtEnd, when the test ends, calls stop and waits up to 30s for the command to end
// without an error (else kill); its output is shown if the test failed.
func (b *background) stopAtEnd(t *testing.T, how string, stop, kill func()) {
	t.Cleanup(func() {
		stop()
		select {
		case err := <-b.done:
			if err != nil {
				t.Errorf("tollgate %s ended with %v after %s", b.name, err, how)
			}
		case <-time.After(30 * time.Second):
			kill()
			t.Errorf("tollgate %s did not stop within 30s of %s", b.name, how)
		}
		if t.Failed() {
			t.Logf("tollgate %s's output:\n%s", b.name, tail(b.String(), 60))
		}
	})
}

// readyAddrs reads the addresses from a ready line ("… grpc=127.0.0.1:1234 admin=…").
func readyAddrs(line string) map[string]string {
	addrs := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			addrs[k] = v
		}
	}
	return addrs
}

// waitFor waits until the command prints a line containing s and returns that line.
func (b *background) waitFor(t *testing.T, s string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, line := range strings.Split(b.String(), "\n") {
			if strings.Contains(line, s) {
				return line
			}
		}
		select {
		case err := <-b.done:
			b.done <- err // for the cleanup
			t.Fatalf("tollgate %s ended (%v) before printing %q:\n%s", b.name, err, s, tail(b.String(), 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tollgate %s did not print %q within 30s:\n%s", b.name, s, tail(b.String(), 40))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
