package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
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
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tollgate-dev/tollgate/paywall"
)

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
// authorized; the page has an EIP-712 top-up signed and shows it pending; the wallet page shows
// the balance and history and disconnects. Screenshots are kept
// in api/testdata/screenshots (git-ignored).
func TestBrowserConnectAndTopUp(t *testing.T) {
	chromium, node, playwright := browserPrereqs(t)
	e := newEnv(t)
	pw, _ := e.newPaywall("Browser Demo")
	key, address := newWallet(t)
	// The wallet starts on mainnet, so the pages must ask it to switch.
	wallet := &fakeWallet{t: t, key: key, address: address, chainID: 1}
	// An earlier top-up, for the wallet page's balance and history.
	e.deposit(address, 2_500_000)
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

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
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
	out, err := cmd.Output()
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
	var status, from string
	var amount int64
	err = e.db.Pool.QueryRow(t.Context(), `SELECT status, wallet, amount_micro FROM settlement_topups WHERE paywall_id = $1 AND user_id = $2`,
		pw.ID, "browser-user").Scan(&status, &from, &amount)
	if err != nil || status != "signed" || from != address || amount != 5_000_000 {
		t.Errorf("top-up in the database: %s %s %d %v", status, from, amount, err)
	}

	if w := steps["wallet"]; !strings.Contains(w["status"], "2.50") || !strings.Contains(w["history"], "Top-up+2.50") {
		t.Errorf("wallet page shows %q and history %q", w["status"], w["history"])
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
	for _, f := range []string{"1-connect.png", "2-connected.png", "3-topup.png", "4-topup-pending.png", "5-wallet.png", "6-disconnected.png"} {
		if st, err := os.Stat(filepath.Join(shots, f)); err != nil || st.Size() == 0 {
			t.Errorf("screenshot %s: %v", f, err)
		}
	}
}
