package mainlib

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
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
	remote := filepath.Join(dir, "remote.yaml")
	writeFile(t, remote, `settle:
  treasury: "0x1111111111111111111111111111111111111111"
  hot_wallet:
    signer_url: "http://tollgate:hunter2@127.0.0.1:1/hunter2?token=hunter2"
    address: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
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
		{"no hot wallet key", []string{"settle", "-config", oneChain}, "settle.hot_wallet needs private_key", 1},
		{"unreachable remote signer", []string{"settle", "-config", remote}, "settlement: ask the remote signer for its accounts", 1},
		{"unknown chain flag", []string{"settle", "-config", oneChain, "-chain", "137"}, "-chain 137 is not configured", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Main(t.Context(), tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) || ExitCode(err) != tt.code {
				t.Fatalf("err = %v (exit %d), want %q (exit %d)", err, ExitCode(err), tt.want, tt.code)
			}
			if strings.Contains(err.Error()+errOut.String(), "hunter2") {
				t.Fatalf("the remote signer's credentials were shown: %v", err)
			}
		})
	}
}

// TestAnvilSettleCommand runs `tollgate settle` against anvil with a configuration file and the
// hot wallet key in the environment, relays a top-up through it, and stops it cleanly.
func TestAnvilSettleCommand(t *testing.T) {
	a := newAnvilSettle(t, false)
	// The hot wallet is the treasury too: nothing requires them apart.
	treasury := a.hotAddr.Hex()
	cfgPath := a.config(t, treasury, a.node.URL, "log:\n  level: debug\n", "")
	r := startSettle(t, cfgPath)
	a.topUp(t, r, cfgPath, treasury, 2_500_000)
	b, err := ledger.New(a.db.Pool, ledger.Options{}).Balance(t.Context(), a.userAddr().Hex())
	if err != nil || b.PostedMicro != 2_500_000 {
		t.Fatalf("wallet %+v, %v", b, err)
	}
	r.shutdown(t)
	logs := r.stderr.String()
	if strings.Contains(strings.ToLower(logs), a.hotKeyHex()) || strings.Contains(logs, a.node.URL) {
		t.Fatal("the logs contain the hot wallet key or the RPC URL")
	}
	if !strings.Contains(logs, "deposit credited") {
		t.Fatalf("no credit in the logs:\n%s", logs)
	}
}

// TestAnvilSettleCommandRemoteSigner: the same relay with no key in the configuration or the
// environment: settle.hot_wallet.signer_url names a remote signer (anvil holding one of its own
// accounts, signing over JSON-RPC as Web3Signer would) and address the hot wallet it signs for.
func TestAnvilSettleCommandRemoteSigner(t *testing.T) {
	a := newAnvilSettle(t, true)
	hot := a.hotAddr.Hex()
	cfgPath := a.config(t, hot, a.node.URL, "", "")
	r := startSettle(t, cfgPath)
	a.topUp(t, r, cfgPath, hot, 1_500_000)
	b, err := ledger.New(a.db.Pool, ledger.Options{}).Balance(t.Context(), a.userAddr().Hex())
	if err != nil || b.PostedMicro != 1_500_000 {
		t.Fatalf("wallet %+v, %v", b, err)
	}
	r.shutdown(t)
	if logs := r.stderr.String(); !strings.Contains(logs, `"hot_wallet":"`+hot+`"`) || strings.Contains(logs, a.node.URL) {
		t.Fatalf("want the hot wallet %s in the logs and never the signer's URL:\n%s", hot, logs)
	}
}

// anvilSettle is the world of a `tollgate settle` test: anvil with TestUSDC, a token owner and
// a hot wallet with gas money, a user holding 5 USDC, and a fresh database. The hot wallet's key
// is hot, or, with remote, in anvil, which then signs for it (hot is nil).
type anvilSettle struct {
	node             *chaintest.Anvil
	send             chaintest.Sender
	token            common.Address
	owner, hot, user *ecdsaKey
	hotAddr          common.Address
	db               *testdb.DB
}

func newAnvilSettle(t *testing.T, remote bool) *anvilSettle {
	t.Helper()
	ctx := t.Context()
	opts := chaintest.AnvilOptions{}
	if remote {
		opts.SigningAccounts = 1 // funded by anvil itself
	}
	a := &anvilSettle{node: chaintest.StartAnvil(t, opts), owner: newKey(t), user: newKey(t)}
	funded := []*ecdsaKey{a.owner}
	if remote {
		a.hotAddr = a.node.SigningAccount(t)
	} else {
		a.hot = newKey(t)
		a.hotAddr = crypto.PubkeyToAddress(a.hot.PublicKey)
		funded = append(funded, a.hot)
	}
	for _, k := range funded {
		if err := a.node.SetBalance(ctx, crypto.PubkeyToAddress(k.PublicKey), new(big.Int).Mul(big.NewInt(10), big.NewInt(1e18))); err != nil {
			t.Fatal(err)
		}
	}
	a.send = chaintest.Sender{Client: a.node.Client, TipFloor: big.NewInt(25_000_000_000)}
	var err error
	if a.token, err = a.send.DeployToken(ctx, a.owner, "USD Coin"); err != nil {
		t.Fatal(err)
	}
	a.mint(t, a.userAddr(), 5_000_000)
	a.db = testdb.New(t, schema.All()...)
	return a
}

func (a *anvilSettle) userAddr() common.Address { return crypto.PubkeyToAddress(a.user.PublicKey) }

func (a *anvilSettle) hotKeyHex() string { return hex.EncodeToString(crypto.FromECDSA(a.hot)) }

func (a *anvilSettle) mint(t *testing.T, to common.Address, micro int64) {
	t.Helper()
	if err := a.send.Mint(t.Context(), a.owner, a.token, to, micro); err != nil {
		t.Fatal(err)
	}
}

// config writes a configuration file for the chain, reached at rpcURL, with extraTop before
// the settle section and extraSettle inside it, and puts the hot wallet's key (or its remote
// signer) in the environment. It returns the file's path.
func (a *anvilSettle) config(t *testing.T, treasury, rpcURL, extraTop, extraSettle string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	writeFile(t, path, fmt.Sprintf(`database:
  url: %q
%ssettle:
  treasury: %q
  poll_interval: 300ms
  lease_ttl: 10s
%s  chains:
    - id: %q
      name: anvil
      rpc_url: %q
      usdc: %q
      tip_floor_gwei: "25"
`, a.db.URL, extraTop, treasury, extraSettle, a.node.ChainID.String(), rpcURL, a.token.Hex()))
	if a.hot == nil {
		t.Setenv("TOLLGATE_SETTLE_HOT_WALLET_SIGNER_URL", a.node.URL)
		t.Setenv("TOLLGATE_SETTLE_HOT_WALLET_ADDRESS", a.hotAddr.Hex())
	} else {
		t.Setenv("TOLLGATE_SETTLE_HOT_WALLET_PRIVATE_KEY", "0x"+a.hotKeyHex())
	}
	return path
}

// topUp has the user sign a top-up of micro through the API side (TopUps, from the same
// configuration) and waits until the running worker credited it.
func (a *anvilSettle) topUp(t *testing.T, r *runningSettle, cfgPath, treasury string, micro int64) {
	t.Helper()
	ctx := t.Context()
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := settlement.ChainsFromConfig(cfg.Settle.Chains)
	if err != nil {
		t.Fatal(err)
	}
	topups, err := settlement.NewTopUps(a.db.Pool, chains, treasury, settlement.TopUpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := topups.Create(ctx, settlement.TopUpRequest{Wallet: a.userAddr().Hex(), AmountMicro: micro})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topups.Submit(ctx, in.ID, signIntent(t, chains[0], a.user, in.TypedData)); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "top-up credited", func() bool {
		tu, err := topups.Get(ctx, in.ID)
		return err == nil && tu.Status == settlement.TopUpCredited
	})
}

// runningSettle is `tollgate settle` running in-process.
type runningSettle struct {
	stop   context.CancelFunc
	done   chan error
	stderr *lockedBuffer
}

// startSettle runs `tollgate settle -config cfgPath` and waits for its readiness line.
func startSettle(t *testing.T, cfgPath string) *runningSettle {
	t.Helper()
	ctx, stop := context.WithCancel(t.Context())
	t.Cleanup(stop)
	r := &runningSettle{stop: stop, done: make(chan error, 1), stderr: &lockedBuffer{}}
	go func() { r.done <- Main(ctx, []string{"settle", "-config", cfgPath}, io.Discard, r.stderr) }()
	r.waitFor(t, "readiness line", func() bool { return strings.Contains(r.stderr.String(), settleReady) })
	return r
}

func (r *runningSettle) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, cond, r.done, r.stderr)
}

// shutdown cancels the command and checks that it stops cleanly.
func (r *runningSettle) shutdown(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("settle returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("settle did not stop within 15s of cancellation")
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

// TestAnvilSettleMetricsAndHealth runs the real `tollgate settle` against anvil, through an
// RPC proxy that can fail, with its admin listener on a free port: after a top-up and a
// payout, /metrics shows them (top-ups, deposits and payouts by status, broadcasts, the last
// final block, the finality lag, the hot wallet's balances, the lease); /healthz is 200, turns
// 503 while the node does not answer for longer than rpc_unhealthy_after and back to 200 when
// it does, and 503 once another worker took the lease.
func TestAnvilSettleMetricsAndHealth(t *testing.T) {
	ctx := t.Context()
	a := newAnvilSettle(t, false)
	a.mint(t, a.hotAddr, 10_000_000)
	rpcProxy := newFlakyRPC(t, a.node.URL)
	treasury := crypto.PubkeyToAddress(newKey(t).PublicKey).Hex()
	cfgPath := a.config(t, treasury, rpcProxy.URL, "", "  admin_addr: 127.0.0.1:0\n  rpc_unhealthy_after: 2s\n")
	r := startSettle(t, cfgPath)
	admin := readyAdminAddr(t, r.stderr.String())
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	a.topUp(t, r, cfgPath, treasury, 2_500_000)

	// A payout of what the user spent with a developer, paid at finality.
	book := ledger.New(a.db.Pool, ledger.Options{})
	if _, err := book.Charge(ctx, ledger.ChargeRequest{Key: "charge-1", Wallet: a.userAddr().Hex(), Paywall: "app", Split: ledger.Split{DeveloperMicro: 1_000_000}}); err != nil {
		t.Fatal(err)
	}
	payout, err := book.RequestPayout(ctx, ledger.PayoutRequest{Key: "payout-1", Paywall: "app", ChainID: a.node.ChainID.String(),
		To: "0x00000000000000000000000000000000000b0b03", AmountMicro: 600_000})
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "payout settled", func() bool {
		p, err := book.GetPayout(ctx, payout.ID)
		return err == nil && p.Status == ledger.PayoutSettled
	})

	chain := `chain="` + a.node.ChainID.String() + `"`
	// The worker counts right after the ledger and database writes the test waited for, and
	// counts the open work at the end of its round.
	var metrics string
	r.waitFor(t, "the metrics count the payout", func() bool {
		_, metrics = get("/metrics")
		return strings.Contains(metrics, `tollgate_settle_payouts_total{`+chain+`,status="settled"} 1`) &&
			strings.Contains(metrics, `tollgate_settle_open_payouts{`+chain+`,status="sending"} 0`)
	})
	for _, want := range []string{
		`tollgate_settle_topups_total{` + chain + `,status="submitted"} 1`,
		`tollgate_settle_topups_total{` + chain + `,status="credited"} 1`,
		`tollgate_settle_deposits_credited_total{` + chain + `,kind="topup"} 1`,
		`tollgate_settle_deposits_credited_micro_usdc_total{` + chain + `,kind="topup"} 2.5e+06`,
		`tollgate_settle_payouts_total{` + chain + `,status="sent"} 1`,
		`tollgate_settle_payouts_total{` + chain + `,status="settled"} 1`,
		`tollgate_settle_open_topups{` + chain + `,status="submitted"} 0`,
		`tollgate_settle_broadcasts_total{` + chain + `,result="accepted"} 2`,
		`tollgate_settle_replacements_total{` + chain + `} 0`,
		`tollgate_settle_lease_held{` + chain + `} 1`,
		`tollgate_settle_last_finalized_block{` + chain + `} `,
		`tollgate_settle_finality_lag_blocks{` + chain + `} `,
		`tollgate_settle_finality_lag_seconds{` + chain + `} `,
		`tollgate_settle_hot_wallet_usdc{` + chain + `} `,
		`tollgate_settle_hot_wallet_native{` + chain + `} `,
		`tollgate_settle_rpc_calls_total{` + chain + `,method="eth_getLogs",result="ok"} `,
		"go_goroutines",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if v := metricLine(t, metrics, `tollgate_settle_last_finalized_block{`+chain+`}`); v <= 0 {
		t.Errorf("last finalized block %v", v)
	}
	// The balances were read at the first tick or since: before or after the payout.
	if v := metricLine(t, metrics, `tollgate_settle_hot_wallet_usdc{`+chain+`}`); v != 10 && v != 9.4 {
		t.Errorf("hot wallet USDC %v, want 10 or 9.4", v)
	}
	if v := metricLine(t, metrics, `tollgate_settle_hot_wallet_native{`+chain+`}`); v <= 9 || v > 10 {
		t.Errorf("hot wallet native %v, want a little under 10", v)
	}
	if code, body := get("/healthz"); code != http.StatusOK || !strings.Contains(body, "lease active") {
		t.Fatalf("/healthz %d %q", code, body)
	}

	// The node stops answering: unhealthy after rpc_unhealthy_after, healthy when it is back.
	rpcProxy.down.Store(true)
	r.waitFor(t, "/healthz reports the node", func() bool {
		code, body := get("/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "the chain's node has not answered")
	})
	if _, m := get("/metrics"); !strings.Contains(m, `tollgate_settle_rpc_calls_total{`+chain+`,method="eth_getBlockByNumber",result="error"}`) {
		t.Error("/metrics counts no failed eth_getBlockByNumber")
	}
	rpcProxy.down.Store(false)
	r.waitFor(t, "/healthz recovers", func() bool { code, _ := get("/healthz"); return code == http.StatusOK })

	// Another worker takes the lease (as one whose clock raced ahead would).
	a.db.Must(t, `UPDATE settlement_leases SET holder = 'intruder', epoch = epoch + 1, expires_at = now() + interval '1 hour'`)
	r.waitFor(t, "/healthz reports the lost lease", func() bool {
		code, body := get("/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "lease lost")
	})
	if _, m := get("/metrics"); !strings.Contains(m, `tollgate_settle_lease_held{`+chain+`} 0`) || strings.Contains(m, "tollgate_settle_hot_wallet_usdc{") {
		t.Errorf("after losing the lease, /metrics shows:\n%s", grepLines(m, "tollgate_settle_lease_held", "tollgate_settle_hot_wallet"))
	}

	r.shutdown(t)
	if resp, err := http.Get("http://" + admin + "/healthz"); err == nil {
		_ = resp.Body.Close()
		t.Error("the admin listener still answers after settle stopped")
	}
}

// readyAdminAddr reads the admin listener's address from settle's readiness log line.
func readyAdminAddr(t *testing.T, logs string) string {
	t.Helper()
	for line := range strings.SplitSeq(logs, "\n") {
		var l struct {
			Msg   string `json:"msg"`
			Admin string `json:"admin"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == settleReady {
			if l.Admin == "" {
				t.Fatalf("the readiness line names no admin address: %s", line)
			}
			return l.Admin
		}
	}
	t.Fatalf("no readiness line in:\n%s", logs)
	return ""
}

// metricLine returns the value of the /metrics line that starts with series.
func metricLine(t *testing.T, metrics, series string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return 0
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}

// flakyRPC is the chain's RPC provider at the process boundary: a proxy to the node that
// answers 503 while down is set, as a provider in an outage does.
type flakyRPC struct {
	*httptest.Server
	down atomic.Bool
}

func newFlakyRPC(t *testing.T, nodeURL string) *flakyRPC {
	t.Helper()
	target, err := url.Parse(nodeURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &flakyRPC{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.down.Load() {
			http.Error(w, "flakyRPC: provider outage", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// TestSettleUnassignedAndAssign runs `tollgate settle unassigned` and `tollgate settle assign`
// on a database holding two transfers from unlinked addresses (as the watcher stores them;
// settlement's tests cover the watcher): listed as text and JSON; assigning credits the
// wallet once, however often it runs; another wallet is refused; bad input changes nothing.
func TestSettleUnassignedAndAssign(t *testing.T) {
	db := testdb.New(t, schema.All()...)
	t.Setenv("TOLLGATE_DATABASE_URL", db.URL)
	t.Setenv("TOLLGATE_CONFIG", "")
	ctx := t.Context()
	deposit := func(txByte string, micro int64) string {
		t.Helper()
		tx := "0x" + strings.Repeat(txByte, 32)
		var id string
		if err := db.Pool.QueryRow(ctx, `
			INSERT INTO settlement_unassigned (chain_id, tx_hash, log_pos, token, from_addr, amount_micro, block_number,
				block_hash, ledger_key, status)
			VALUES ('137', $1, 3, '0x3c499c542cef5e3811e1192ce70d8cc03d5c3359', '0x00000000000000000000000000000000000f00d5', $2, 70000000,
				$3, $4, 'unassigned') RETURNING id::TEXT`, tx, micro, "0x"+strings.Repeat("bb", 32), "137:"+tx+":3").Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	first, second := deposit("aa", 3_000_000), deposit("cc", 1_250_000)
	run := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := Main(ctx, append([]string{"settle"}, args...), &out, &errOut)
		return out.String(), err
	}
	book := ledger.New(db.Pool, ledger.Options{})
	balance := func(wallet string) int64 {
		t.Helper()
		b, err := book.Balance(ctx, wallet)
		if errors.Is(err, ledger.ErrUnknownAccount) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return b.PostedMicro
	}

	out, err := run("unassigned")
	if err != nil || !strings.Contains(out, first) || !strings.Contains(out, second) || !strings.Contains(out, " 1.25 ") ||
		!strings.Contains(out, "0x00000000000000000000000000000000000f00d5") || !strings.Contains(out, "tollgate settle assign") {
		t.Fatalf("settle unassigned: %v\n%s", err, out)
	}

	const alice, bob = "0x00000000000000000000000000000000000a11ce", "0x0000000000000000000000000000000000000b0b"
	for range 2 { // the second run finds it assigned to the same wallet and credits nothing
		out, err = run("assign", "--deposit", first, "--wallet", alice)
		if err != nil || !strings.Contains(out, "is credited to "+alice) {
			t.Fatalf("settle assign: %v\n%s", err, out)
		}
	}
	if got := balance(alice); got != 3_000_000 {
		t.Fatalf("alice holds %d, want 3000000 (credited once)", got)
	}
	for _, bad := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"assign", "-deposit", first, "-wallet", bob}, "already assigned to another wallet", 1},
		{[]string{"assign", "-deposit", "00000000-0000-0000-0000-000000000000", "-wallet", bob}, "unassigned deposit not found", 1},
		{[]string{"assign", "-deposit", second, "-wallet", "bob"}, "invalid wallet address", 1},
		{[]string{"assign", "-deposit", second}, "needs -deposit and -wallet", 2},
		{[]string{"assign", "-deposit", second, "-wallet", bob, "extra"}, "wants -deposit ID -wallet 0xADDRESS", 2},
		{[]string{"nonsense"}, `unknown settle subcommand "nonsense"`, 2},
	} {
		_, err := run(bad.args...)
		if err == nil || !strings.Contains(err.Error(), bad.want) || ExitCode(err) != bad.code {
			t.Errorf("settle %v: %v (exit %d), want %q (exit %d)", bad.args, err, ExitCode(err), bad.want, bad.code)
		}
	}
	if got := balance(bob); got != 0 {
		t.Fatalf("bob holds %d after refused assignments", got)
	}

	var listed []struct {
		ID, Status, Wallet string
		AmountMicro        int64  `json:"amount_micro"`
		AmountUSDC         string `json:"amount_usdc"`
	}
	out, err = run("unassigned", "-all", "-json")
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 2 {
		t.Fatalf("settle unassigned -all -json: %v\n%s", err, out)
	}
	if l := listed[0]; l.ID != first || l.Status != "assigned" || l.Wallet != alice || l.AmountMicro != 3_000_000 || l.AmountUSDC != "3.00" {
		t.Errorf("first listed %+v", l)
	}
	if out, err = run("unassigned", "-json"); err != nil || !strings.Contains(out, second) || strings.Contains(out, first) {
		t.Errorf("settle unassigned -json lists the assigned one, or not the open one: %v\n%s", err, out)
	}
}
